"""Established TCP connections on one local port, read from the kernel's sock_diag netlink.

Why netlink: ``/proc/net/tcp{,6}`` prints every TCP socket of the namespace as text, which
costs ~10-26 ms per read with 1000 connections.  An ``inet_diag`` dump lets the kernel filter
(``idiag_states`` = ESTABLISHED; ``id.idiag_sport`` and an ``INET_DIAG_REQ_BYTECODE`` program =
our local port) and copies out only matching sockets as binary records.

One dump for both families: the legacy ``TCPDIAG_GETSOCK`` request becomes an
``AF_UNSPEC`` dump in the kernel (``inet_diag_dump_compat``), honouring the same filters, so
IPv4 and IPv6 (v4-mapped clients of a dual-stack listener included) cost one walk instead of
two.  A kernel that refuses it (EINVAL/EOPNOTSUPP) gets the two per-family dumps instead.

The floor is the kernel: every dump walks the whole established hash
(``/proc/sys/net/ipv4/tcp_ehash_entries``, sized from RAM: 262144 buckets and ~1.7-2.5 ms on a
24 GiB VM), and no request field makes it skip buckets; each matching socket then adds a few
microseconds.  Only the host can shrink the table (``thash_entries=`` at boot, or
``net.ipv4.tcp_child_ehash_entries`` for a service in its own network namespace).  The socket
stays open between calls, so the kernel sizes dump batches from our earlier reads.

What is counted: ESTABLISHED sockets whose *local* port is the given port, i.e. the server
side of connections to a service listening there (accepted or still in the accept queue).
A connection's identity is ``(family, local address, local port, remote address, remote
port)``: not the inode (0 until accepted), not the socket cookie (/proc does not show it, and
the /proc fallback, used where netlink is refused, e.g. by seccomp, must give the same set).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from types import TracebackType

import psutil

__all__ = [
    "ConnectionId",
    "NetlinkDiag",
    "established_connections",
    "proc_established_connections",
    "psutil_established_connections",
]

log = logging.getLogger(__name__)

#: (family, local address bytes, local port, remote address bytes, remote port)
ConnectionId = tuple[int, bytes, int, bytes, int]

# --- constants from linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, net/tcp_states.h ---
NETLINK_SOCK_DIAG = 4
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCPDIAG_GETSOCK = 18  # legacy inet_diag_req dump: family AF_UNSPEC, i.e. IPv4 and IPv6 at once
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
TCP_ESTABLISHED = 1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host byte order)
_NLMSG_LEN_TYPE_SEQ = struct.Struct("=IH2xI4x")  # the header fields the reply loop needs
# Both requests carry an inet_diag_sockid (48 bytes) whose first field, idiag_sport, is a
# big-endian port the kernel compares with each socket's local port; the rest stays zero.
# inet_diag_req_v2: family, protocol, ext, pad, states, id.
_REQ_V2 = struct.Struct("=BBBxI2s46x")
# inet_diag_req: family (ignored by a dump), src_len, dst_len, ext, id, states, dbs.
_REQ_COMPAT = struct.Struct("=B3x2s46xII")
_NLATTR = struct.Struct("=HH")  # nla_len, nla_type
_BC_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes, no (host byte order)
# The inet_diag_sockid inside an inet_diag_msg, after its 4 one-byte fields (the first is the
# socket's family): ports and addresses are big-endian.  AF_INET uses only the first 4 bytes
# of each 16-byte address.
_MSG_ID4 = struct.Struct("!4xHH4s12x4s")
_MSG_ID6 = struct.Struct("!4xHH16s16s")
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_RECV_BUFSIZE = 1 << 17  # the kernel caps a dump skb at 32 KiB; room to spare
_RECV_TIMEOUT = struct.pack("@ll", 2, 0)  # SO_RCVTIMEO: never hang a collection tick

# Errors after which netlink will not start working on a later tick: stop trying it.
PERMANENT_ERRNOS = frozenset(
    {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EPERM, errno.EACCES, errno.ENOENT}
)
# How a kernel without the legacy request refuses it: sock_diag answers EINVAL for a message
# type it does not know, EOPNOTSUPP when no inet compat handler is registered.
_COMPAT_REFUSED_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP})

_PROC_FILES = ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6"))
#: Whether this platform has netlink at all (Linux); elsewhere psutil answers.
HAS_NETLINK = hasattr(socket, "AF_NETLINK")

_PROC_ESTABLISHED = "01"


class _Refused(OSError):
    """The kernel answered the request with an error (NLMSG_ERROR, or a failed NLMSG_DONE).

    The dump is over, so the socket holds nothing more of it and can be reused at once.
    """


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return port


def _port_bytecode(port: int) -> bytes:
    """INET_DIAG_REQ_BYTECODE attribute matching ``port <= local port <= port``.

    The kernel runs the ops in order; each jumps ``yes`` or ``no`` bytes forward and a socket
    matches iff the program ends exactly at its end.  Jumping 4 bytes past the end (the most
    the verifier allows) rejects.  A port comparison keeps its operand in the ``no`` field of
    the following op, so each test is 8 bytes: ``yes`` = 8 moves on to the next test.

    ``idiag_sport`` in the request already keeps only our port (and, tested first, spares the
    program for every other socket); the program makes the filter not depend on that field.
    """
    program = b"".join(
        (
            _BC_OP.pack(INET_DIAG_BC_S_GE, 8, 16 + 4),  # no: past both tests (16) + 4 = reject
            _BC_OP.pack(0, 0, port),
            _BC_OP.pack(INET_DIAG_BC_S_LE, 8, 8 + 4),  # no: past this test (8) + 4 = reject
            _BC_OP.pack(0, 0, port),
        )
    )
    return _NLATTR.pack(_NLATTR.size + len(program), INET_DIAG_REQ_BYTECODE) + program


def _message(kind: int, body: bytes) -> bytes:
    """A dump request; its seq is patched into each copy at send time."""
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, 0, 0) + body


class NetlinkDiag:
    """One NETLINK_SOCK_DIAG socket, reused across queries.

    Each query is one ``TCPDIAG_GETSOCK`` dump covering IPv4 and IPv6 (one walk of the
    established hash), or, with ``single_dump=False`` or once the kernel has refused that
    request, one ``SOCK_DIAG_BY_FAMILY`` dump per family.  :attr:`single_dump` tells which.

    Opening the socket raises :class:`OSError` where netlink is unavailable; so does a query
    the kernel refuses, or a reply that cannot be parsed.  After an error the socket may hold
    the rest of an abandoned dump: close it and open a new one.
    """

    def __init__(self, *, single_dump: bool = True) -> None:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
        )
        try:
            sock.bind((0, 0))
            # A kernel-level receive timeout keeps the socket in plain blocking mode (Python's
            # settimeout would add a poll() before every recv).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _RECV_TIMEOUT)
        except OSError:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        self._buf = bytearray(_RECV_BUFSIZE)
        self._seq = 0
        #: True: one AF_UNSPEC dump per query; False: one dump per family
        self.single_dump = single_dump
        self._compat_requests: dict[int, bytes] = {}
        self._family_requests: dict[int, tuple[bytes, ...]] = {}

    def established(self, port: int) -> set[ConnectionId]:
        """Identities of the ESTABLISHED IPv4 and IPv6 TCP sockets whose local port is ``port``."""
        if self._sock is None:
            raise OSError(errno.EBADF, "netlink socket is closed")
        check_port(port)
        found: set[ConnectionId] = set()
        if self.single_dump:
            request = self._compat_requests.get(port)
            if request is None:
                request = self._compat_requests[port] = self._compat_request(port)
            try:
                self._dump(request, TCPDIAG_GETSOCK, found)
            except _Refused as exc:
                if exc.errno not in _COMPAT_REFUSED_ERRNOS:
                    raise
                log.info("sock_diag refused the IPv4+IPv6 dump (%s); dumping per family", exc)
                self.single_dump = False
                found.clear()  # start the per-family dumps from nothing
            else:
                return found
        requests = self._family_requests.get(port)
        if requests is None:
            requests = self._family_requests[port] = tuple(
                self._request(family, port) for family in _FAMILIES
            )
        for request in requests:
            self._dump(request, SOCK_DIAG_BY_FAMILY, found)
        return found

    @staticmethod
    def _compat_request(port: int) -> bytes:
        """TCPDIAG_GETSOCK dump of ESTABLISHED sockets on local ``port``, both families."""
        body = _REQ_COMPAT.pack(socket.AF_UNSPEC, port.to_bytes(2, "big"), 1 << TCP_ESTABLISHED, 0)
        return _message(TCPDIAG_GETSOCK, body + _port_bytecode(port))

    @staticmethod
    def _request(family: int, port: int) -> bytes:
        """SOCK_DIAG_BY_FAMILY dump of ESTABLISHED sockets on local ``port``, one family."""
        body = _REQ_V2.pack(
            family, socket.IPPROTO_TCP, 0, 1 << TCP_ESTABLISHED, port.to_bytes(2, "big")
        )
        return _message(SOCK_DIAG_BY_FAMILY, body + _port_bytecode(port))

    def _dump(self, request: bytes, reply_type: int, found: set[ConnectionId]) -> None:
        """Send one dump request; add each socket record (of type ``reply_type``) to ``found``."""
        assert self._sock is not None
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        message = bytearray(request)
        struct.pack_into("=I", message, 8, seq)
        self._sock.send(message)

        buf = self._buf
        header_size = _NLMSGHDR.size
        unpack_header = _NLMSG_LEN_TYPE_SEQ.unpack_from
        unpack_id4 = _MSG_ID4.unpack_from
        unpack_id6 = _MSG_ID6.unpack_from
        inet, inet6 = socket.AF_INET, socket.AF_INET6
        add = found.add
        recv_into = self._sock.recv_into
        while True:
            # MSG_TRUNC makes recv report the datagram's full length, so truncation shows.
            size = recv_into(buf, 0, socket.MSG_TRUNC)
            if size > len(buf):
                raise OSError(errno.EMSGSIZE, f"netlink reply of {size} bytes truncated")
            offset = 0
            while offset + header_size <= size:
                length, kind, msg_seq = unpack_header(buf, offset)
                if length < header_size or offset + length > size:
                    raise OSError(errno.EPROTO, "malformed netlink message")
                if msg_seq == seq:
                    if kind == reply_type:
                        if length < header_size + _MSG_ID6.size:
                            raise OSError(errno.EPROTO, "short sock_diag record")
                        at = offset + header_size
                        # The record's first byte is the socket's family.
                        if buf[at] == inet:
                            sport, dport, src, dst = unpack_id4(buf, at)
                            add((inet, src, sport, dst, dport))
                        else:
                            sport, dport, src, dst = unpack_id6(buf, at)
                            add((inet6, src, sport, dst, dport))
                    elif kind in (NLMSG_DONE, NLMSG_ERROR):
                        self._finish(kind, buf, offset, length)
                        return
                offset += (length + 3) & ~3

    @staticmethod
    def _finish(kind: int, buf: bytearray, offset: int, length: int) -> None:
        """NLMSG_DONE carries the dump's status (0 or -errno), NLMSG_ERROR a -errno."""
        status = 0
        if length >= _NLMSGHDR.size + 4:
            (status,) = struct.unpack_from("=i", buf, offset + _NLMSGHDR.size)
        if status < 0 or (kind == NLMSG_ERROR and status != 0):
            code = -status
            raise _Refused(code, f"sock_diag dump failed: {os.strerror(code)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NetlinkDiag:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _proc_address(text: str) -> bytes:
    """/proc prints each 32-bit word of the address in host byte order, as 8 hex digits."""
    words = struct.unpack(f">{len(text) // 8}I", bytes.fromhex(text))
    return struct.pack(f"={len(words)}I", *words)


def proc_established_connections(
    port: int, files: tuple[tuple[int, str], ...] = _PROC_FILES
) -> set[ConnectionId]:
    """The same answer as :meth:`NetlinkDiag.established`, parsed from /proc/net/tcp{,6}.

    A missing tcp6 file (kernel without IPv6) means no IPv6 sockets; any other read error
    raises :class:`OSError`.
    """
    suffix = f":{check_port(port):04X}"
    found: set[ConnectionId] = set()
    for family, path in files:
        try:
            with open(path, encoding="ascii") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            if family == socket.AF_INET6:
                continue
            raise
        for line in lines[1:]:
            # "sl local_address rem_address st ...", e.g. "0: 0100007F:1F90 0100007F:C350 01"
            fields = line.split(None, 4)
            if len(fields) < 4 or fields[3] != _PROC_ESTABLISHED:
                continue
            local, remote = fields[1], fields[2]
            if not local.endswith(suffix):
                continue
            laddr, _, lport = local.partition(":")
            raddr, _, rport = remote.partition(":")
            found.add(
                (family, _proc_address(laddr), int(lport, 16), _proc_address(raddr), int(rport, 16))
            )
    return found


def psutil_established_connections(port: int) -> set[ConnectionId]:
    """The same answer through psutil, the portable path (where there is no /proc/net)."""
    check_port(port)
    found: set[ConnectionId] = set()
    for conn in psutil.net_connections(kind="tcp"):
        laddr, raddr = conn.laddr, conn.raddr  # () for a socket without that address
        if conn.status != psutil.CONN_ESTABLISHED or not laddr or not raddr:
            continue
        (local_ip, local_port), (remote_ip, remote_port) = laddr, raddr
        if local_port != port:
            continue
        family = int(conn.family)
        local = socket.inet_pton(family, local_ip.split("%")[0])
        remote = socket.inet_pton(family, remote_ip.split("%")[0])
        found.add((family, local, local_port, remote, remote_port))
    return found


def fallback_backend() -> str:
    """What answers when netlink does not: "proc" (/proc/net/tcp{,6}) or "psutil"."""
    return "proc" if os.path.exists(_PROC_FILES[0][1]) else "psutil"


def fallback_established_connections(port: int) -> set[ConnectionId]:
    """/proc/net/tcp{,6} on Linux; psutil elsewhere."""
    if fallback_backend() == "proc":
        return proc_established_connections(port)
    return psutil_established_connections(port)


def established_connections(port: int) -> set[ConnectionId]:
    """One-shot query: netlink, or the fallback when netlink cannot be opened or queried.

    Opens and closes a netlink socket per call; a poller should keep a :class:`NetlinkDiag`
    (as :class:`exporter.sources.connections.ConnectionSource` does) instead.
    """
    check_port(port)
    if HAS_NETLINK:
        try:
            with NetlinkDiag() as diag:
                return diag.established(port)
        except OSError:
            pass
    return fallback_established_connections(port)
