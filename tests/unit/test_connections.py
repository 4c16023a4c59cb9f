"""ConnectionSource against real loopback sockets: netlink sock_diag and the /proc fallback."""

from __future__ import annotations

import errno
import select
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sources import connections
from exporter.sources.base import SourceError
from exporter.sources.connections import ConnectionSource
from exporter.sources.readers import tcp_connections
from exporter.sources.readers.tcp_connections import (
    SOCK_DIAG_BY_FAMILY,
    TCPDIAG_GETSOCK,
    ConnectionId,
    NetlinkDiag,
    established_connections,
    proc_established_connections,
)

LOOPBACK4 = socket.inet_pton(socket.AF_INET, "127.0.0.1")
LOOPBACK6 = socket.inet_pton(socket.AF_INET6, "::1")


def _can_bind_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not _can_bind_ipv6_loopback(), reason="::1 cannot be bound: no IPv6 loopback here"
)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def listen(stack: ExitStack, host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    srv.bind((host, 0))
    srv.listen(256)
    srv.settimeout(10)  # a broken test fails instead of hanging in accept()
    return srv


def port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def connect(
    stack: ExitStack, srv: socket.socket, n: int
) -> list[tuple[socket.socket, socket.socket]]:
    """n (client, accepted server-side socket) pairs; both ends ESTABLISHED on return."""
    host, port = srv.getsockname()[:2]
    pairs = []
    for _ in range(n):
        client = stack.enter_context(socket.create_connection((host, port), timeout=10))
        server_side, _ = srv.accept()
        stack.enter_context(server_side)
        pairs.append((client, server_side))
    return pairs


def expected_ids(srv: socket.socket, pairs: list[tuple[socket.socket, socket.socket]]) -> set:
    """The server-side identity of each pair: local = listening port, remote = client's port."""
    family = srv.family
    addr = LOOPBACK4 if family == socket.AF_INET else LOOPBACK6
    port = port_of(srv)
    return {(family, addr, port, addr, port_of(client)) for client, _ in pairs}


def proc_states(port: int, remote_port: int | None = None) -> list[str]:
    """/proc/net/tcp{,6} state codes of every socket whose local port is ``port`` (and whose
    remote port is ``remote_port``, if given)."""
    states = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            if remote_port is None or int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                states.append(fields[3])
    return states


def active(source: ConnectionSource) -> float:
    return source.collect()["active_connections"]


@pytest.mark.parametrize("bad", [0, -1, 65536, 10**6, True, "8080", 80.0, None])
def test_invalid_port_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        ConnectionSource(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proc_established_connections(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        established_connections(bad)  # type: ignore[arg-type]
    with NetlinkDiag() as diag, pytest.raises(ValueError):
        diag.established(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1, 5, 50])
def test_counts_exactly_the_server_side_of_n_connections(stack: ExitStack, n: int) -> None:
    srv = listen(stack)
    pairs = connect(stack, srv, n)
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)

    assert source.collect() == {"active_connections": n, "total_connections": n}
    assert source.backend == "netlink"
    # n, not 2n: each client end is ESTABLISHED too, but its local port is its ephemeral
    # port (its *remote* port is ours), so the identities are exactly the accepted sockets.
    with NetlinkDiag() as diag:
        assert diag.established(port_of(srv)) == expected_ids(srv, pairs)
    for client, _ in pairs:
        # The client end: established, on another local port.  (Only that 4-tuple: a leftover
        # TIME_WAIT socket of an earlier test may share the ephemeral port.)
        assert proc_states(port_of(client), port_of(srv)) == ["01"]


def test_listening_socket_is_not_counted(stack: ExitStack) -> None:
    srv = listen(stack)
    assert proc_states(port_of(srv)) == ["0A"]  # the kernel does list it, as LISTEN
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    assert active(source) == 0
    assert proc_established_connections(port_of(srv)) == set()


def test_connections_to_other_ports_are_not_counted(stack: ExitStack) -> None:
    ours, other = listen(stack), listen(stack)
    connect(stack, ours, 3)
    connect(stack, other, 4)
    source = ConnectionSource(port_of(ours))
    stack.callback(source.close)
    assert active(source) == 3
    with NetlinkDiag() as diag:
        assert len(diag.established(port_of(other))) == 4


def listen_on_adjacent_ports(stack: ExitStack) -> tuple[socket.socket, ...]:
    """Listeners on p-1, p, p+1, to catch off-by-one errors in the >=/<= bytecode."""
    for _ in range(50):
        middle = listen(stack)
        p = port_of(middle)
        try:
            neighbours = []
            for q in (p - 1, p + 1):
                s = stack.enter_context(socket.socket())
                s.bind(("127.0.0.1", q))
                s.listen(16)
                s.settimeout(10)
                neighbours.append(s)
        except OSError:
            continue
        return neighbours[0], middle, neighbours[1]
    pytest.skip("could not find three free adjacent loopback ports")


def test_adjacent_ports_are_filtered_exactly(stack: ExitStack) -> None:
    below, middle, above = listen_on_adjacent_ports(stack)
    connect(stack, below, 2)
    connect(stack, middle, 3)
    connect(stack, above, 4)
    with NetlinkDiag() as diag:
        counts = [len(diag.established(port_of(s))) for s in (below, middle, above)]
    assert counts == [2, 3, 4]
    assert [len(proc_established_connections(port_of(s))) for s in (below, middle, above)] == [
        2,
        3,
        4,
    ]


def test_connection_not_yet_accepted_is_counted(stack: ExitStack) -> None:
    """The kernel completes the handshake before accept(): such a connection is established."""
    srv = listen(stack)
    stack.enter_context(socket.create_connection(("127.0.0.1", port_of(srv)), timeout=10))
    readable, _, _ = select.select([srv], [], [], 10)  # accept queue non-empty: child exists
    assert readable == [srv]
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    assert active(source) == 1
    with NetlinkDiag() as diag:
        assert proc_established_connections(port_of(srv)) == diag.established(port_of(srv))


@needs_ipv6
def test_ipv6_connections_are_counted(stack: ExitStack) -> None:
    srv6 = listen(stack, "::1")
    pairs6 = connect(stack, srv6, 3)
    source = ConnectionSource(port_of(srv6))
    stack.callback(source.close)
    assert active(source) == 3
    with NetlinkDiag() as diag:
        found = diag.established(port_of(srv6))
    assert found == expected_ids(srv6, pairs6)
    assert {conn[0] for conn in found} == {socket.AF_INET6}


@needs_ipv6
def test_ipv4_and_ipv6_on_the_same_port_add_up(stack: ExitStack) -> None:
    srv4 = listen(stack)
    srv6 = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
    try:
        srv6.bind(("::1", port_of(srv4)))
    except OSError:
        pytest.skip("the IPv4 listener's port is taken on ::1")
    srv6.listen(16)
    srv6.settimeout(10)
    pairs4, pairs6 = connect(stack, srv4, 2), connect(stack, srv6, 3)
    with NetlinkDiag() as diag:
        found = diag.established(port_of(srv4))
    assert found == expected_ids(srv4, pairs4) | expected_ids(srv6, pairs6)
    assert proc_established_connections(port_of(srv4)) == found


class Records(list):  # type: ignore[type-arg]
    """A stand-in for the result set that keeps duplicates, to check "reported once"."""

    add = list.append


def raw_dump(request: bytes, reply_type: int) -> Records:
    records = Records()
    with NetlinkDiag() as diag:
        diag._dump(request, reply_type, records)  # type: ignore[arg-type]
    return records


def dual_stack_listener(stack: ExitStack) -> socket.socket:
    """A listener on '::' that also accepts IPv4 (IPV6_V6ONLY=0), as most servers bind."""
    srv = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", 0))
    srv.listen(256)
    srv.settimeout(10)
    return srv


def connect_to(
    stack: ExitStack, srv: socket.socket, host: str, n: int
) -> list[tuple[socket.socket, socket.socket]]:
    pairs = []
    for _ in range(n):
        client = stack.enter_context(socket.create_connection((host, port_of(srv)), timeout=10))
        server_side, _ = srv.accept()
        stack.enter_context(server_side)
        pairs.append((client, server_side))
    return pairs


@needs_ipv6
def test_dual_stack_listener_counts_v4_mapped_and_ipv6_once(stack: ExitStack) -> None:
    """IPv4 clients of a '::' listener are AF_INET6 sockets with ::ffff:a.b.c.d addresses:
    the single AF_UNSPEC dump reports each of them, and each ::1 connection, exactly once."""
    srv = dual_stack_listener(stack)
    port = port_of(srv)
    mapped_pairs = connect_to(stack, srv, "127.0.0.1", 3)
    v6_pairs = connect_to(stack, srv, "::1", 2)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1")
    expected = {(socket.AF_INET6, mapped, port, mapped, port_of(c)) for c, _ in mapped_pairs}
    expected |= {(socket.AF_INET6, LOOPBACK6, port, LOOPBACK6, port_of(c)) for c, _ in v6_pairs}

    records = raw_dump(NetlinkDiag._compat_request(port), TCPDIAG_GETSOCK)
    assert sorted(records) == sorted(expected)  # no record twice, none missing

    with NetlinkDiag() as diag:
        assert diag.established(port) == expected
        assert diag.single_dump  # this kernel takes the one-walk request
    with NetlinkDiag(single_dump=False) as diag:
        assert diag.established(port) == expected
    assert proc_established_connections(port) == expected
    source = ConnectionSource(port)
    stack.callback(source.close)
    assert source.collect() == {"active_connections": 5, "total_connections": 5}


@needs_ipv6
def test_single_dump_and_per_family_dumps_give_identical_sets(stack: ExitStack) -> None:
    """IPv4, IPv6, v4-mapped, and noise on other ports: both request kinds, and /proc, agree
    for every port, and neither reports a connection twice."""
    dual = dual_stack_listener(stack)
    v4, v6 = listen(stack), listen(stack, "::1")
    connect_to(stack, dual, "127.0.0.1", 4)
    connect_to(stack, dual, "::1", 3)
    connect(stack, v4, 5)
    connect(stack, v6, 6)
    for srv, count in ((dual, 7), (v4, 5), (v6, 6)):
        port = port_of(srv)
        with NetlinkDiag() as one, NetlinkDiag(single_dump=False) as two:
            single = one.established(port)
            per_family = two.established(port)
            assert one.single_dump and not two.single_dump
        assert len(single) == count
        assert single == per_family == proc_established_connections(port)
        compat = raw_dump(NetlinkDiag._compat_request(port), TCPDIAG_GETSOCK)
        families = [
            raw_dump(NetlinkDiag._request(family, port), SOCK_DIAG_BY_FAMILY)
            for family in (socket.AF_INET, socket.AF_INET6)
        ]
        assert sorted(compat) == sorted(families[0] + families[1])
        assert len(compat) == count


def _without_bytecode(request: bytes, header: int) -> bytes:
    body = request[16 : 16 + header]
    return struct.pack("=I", 16 + header) + request[4:16] + body


def _without_sport(request: bytes, header: int) -> bytes:
    # idiag_sport opens the inet_diag_sockid: after 4 bytes in inet_diag_req, after 8 (the
    # state mask comes first) in inet_diag_req_v2
    at = 16 + (4 if header == 60 else 8)
    assert request[at : at + 2] != b"\0\0"
    return request[:at] + b"\0\0" + request[at + 2 :]


@pytest.mark.parametrize("keep", ["sport and bytecode", "bytecode only", "sport only"])
@pytest.mark.parametrize("kind", ["single-dump", "per-family"])
def test_each_port_filter_alone_is_exact(stack: ExitStack, keep: str, kind: str) -> None:
    """The kernel honours both the request's idiag_sport and the bytecode, in the legacy
    request as in SOCK_DIAG_BY_FAMILY: either one alone keeps exactly our port."""
    below, middle, above = listen_on_adjacent_ports(stack)
    connect(stack, below, 2)
    connect(stack, middle, 3)
    connect(stack, above, 4)
    port = port_of(middle)
    if kind == "single-dump":
        requests = [(NetlinkDiag._compat_request(port), TCPDIAG_GETSOCK, 60)]
    else:
        requests = [
            (NetlinkDiag._request(family, port), SOCK_DIAG_BY_FAMILY, 56)
            for family in (socket.AF_INET, socket.AF_INET6)
        ]
    records = Records()
    for request, reply_type, header in requests:
        if keep == "bytecode only":
            request = _without_sport(request, header)
        elif keep == "sport only":
            request = _without_bytecode(request, header)
        records += raw_dump(request, reply_type)
    assert {conn[2] for conn in records} == {port}
    assert len(records) == 3


def test_refused_single_dump_falls_back_to_per_family_dumps(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel without the legacy request answers EINVAL: the same socket then dumps per
    family, for good, and gives the same answer."""
    srv = listen(stack)
    pairs = connect(stack, srv, 3)
    real = NetlinkDiag._compat_request
    built = []

    def unknown_type(port: int) -> bytes:  # a message type sock_diag does not know: EINVAL
        built.append(port)
        request = bytearray(real(port))
        struct.pack_into("=H", request, 4, 0x7F00)
        return bytes(request)

    monkeypatch.setattr(NetlinkDiag, "_compat_request", staticmethod(unknown_type))
    sent = []
    real_dump = NetlinkDiag._dump

    def counting_dump(self: NetlinkDiag, request: bytes, reply_type: int, found: set) -> None:
        sent.append(reply_type)
        real_dump(self, request, reply_type, found)

    monkeypatch.setattr(NetlinkDiag, "_dump", counting_dump)
    with NetlinkDiag() as diag:
        assert diag.established(port_of(srv)) == expected_ids(srv, pairs)
        assert not diag.single_dump
        assert diag.established(port_of(srv)) == expected_ids(srv, pairs)
    assert sent == [TCPDIAG_GETSOCK] + [SOCK_DIAG_BY_FAMILY] * 4  # tried once, then per family
    assert built == [port_of(srv)]


def test_source_remembers_a_refused_single_dump_across_reopened_sockets(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = listen(stack)
    connect(stack, srv, 2)
    kinds: list[int] = []
    fail_next = []
    real_dump = NetlinkDiag._dump

    def dump(self: NetlinkDiag, request: bytes, reply_type: int, found: set) -> None:
        kinds.append(reply_type)
        if reply_type == TCPDIAG_GETSOCK:
            raise tcp_connections._Refused(errno.EINVAL, "Invalid argument")
        if fail_next:
            fail_next.pop()
            raise OSError(errno.ENOBUFS, "No buffer space available")  # transient: reopen
        real_dump(self, request, reply_type, found)

    monkeypatch.setattr(NetlinkDiag, "_dump", dump)
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    assert active(source) == 2
    assert kinds == [TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY, SOCK_DIAG_BY_FAMILY]
    fail_next.append(1)
    assert active(source) == 2  # via /proc, after closing the socket
    assert source.backend == "proc"
    del kinds[:]
    assert active(source) == 2  # a new socket, per family from the start
    assert source.backend == "netlink"
    assert kinds == [SOCK_DIAG_BY_FAMILY, SOCK_DIAG_BY_FAMILY]


@pytest.mark.parametrize(
    ("code", "falls_back"),
    [(errno.EOPNOTSUPP, True), (errno.EINVAL, True), (errno.EPERM, False), (errno.EBUSY, False)],
)
def test_only_a_refusal_of_the_request_kind_switches_to_per_family(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch, code: int, falls_back: bool
) -> None:
    srv = listen(stack)
    pairs = connect(stack, srv, 2)
    real_dump = NetlinkDiag._dump

    def refuse_compat(self: NetlinkDiag, request: bytes, reply_type: int, found: set) -> None:
        if reply_type == TCPDIAG_GETSOCK:
            raise tcp_connections._Refused(code, "refused")
        real_dump(self, request, reply_type, found)

    monkeypatch.setattr(NetlinkDiag, "_dump", refuse_compat)
    with NetlinkDiag() as diag:
        if falls_back:
            assert diag.established(port_of(srv)) == expected_ids(srv, pairs)
            assert not diag.single_dump
        else:
            with pytest.raises(OSError) as caught:
                diag.established(port_of(srv))
            assert caught.value.errno == code
            assert diag.single_dump  # not a sign the request kind is unsupported


def test_proc_fallback_gives_the_same_set_as_netlink(stack: ExitStack) -> None:
    srv = listen(stack)
    connect(stack, srv, 20)
    if _can_bind_ipv6_loopback():
        srv6 = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        try:
            srv6.bind(("::1", port_of(srv)))
            srv6.listen(16)
            srv6.settimeout(10)
            connect(stack, srv6, 7)
        except OSError:
            pass  # port taken on ::1: compare IPv4 only
    with NetlinkDiag() as diag:
        via_netlink = diag.established(port_of(srv))
    via_proc = proc_established_connections(port_of(srv))
    assert len(via_netlink) >= 20
    assert via_proc == via_netlink
    assert established_connections(port_of(srv)) == via_netlink

    proc_source = ConnectionSource(port_of(srv), netlink=False)
    assert proc_source.collect() == {
        "active_connections": len(via_netlink),
        "total_connections": len(via_netlink),
    }
    assert proc_source.backend == "proc"


@pytest.mark.skipif(sys.byteorder != "little", reason="sample lines are from a little-endian host")
def test_proc_parser_on_sample_lines(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    tail = " 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1\n"
    tcp = tmp_path / "tcp"
    tcp.write_text(
        header
        + tail.join(
            [
                "   0: 0100007F:1F90 00000000:0000 0A",  # LISTEN on 8080
                "   1: 0100007F:1F90 0100007F:C350 01",  # ESTABLISHED 8080 <- 50000: counted
                "   2: 0100007F:C351 0100007F:1F90 01",  # client end, remote 8080: not ours
                "   3: 0100007F:1F90 0100007F:C352 06",  # TIME_WAIT
                "   4: 0100007F:1F90 0100007F:C353 08",  # CLOSE_WAIT
                "   5: 0F02000A:1F90 0102000A:C354 01",  # 10.0.2.15:8080 <- 10.0.2.1: counted
                "   6: 0100007F:1F91 0100007F:C355 01",  # port 8081
                "",
            ]
        )
    )
    tcp6 = tmp_path / "tcp6"
    loop6 = "00000000000000000000000001000000"
    mapped6 = "0000000000000000FFFF00000100007F"
    tcp6.write_text(
        header
        + tail.join(
            [
                f"   0: {loop6}:1F90 {loop6}:D431 01",  # [::1]:8080 <- [::1]:54321
                f"   1: {mapped6}:1F90 {mapped6}:D432 01",  # v4-mapped ::ffff:127.0.0.1
                "",
            ]
        )
    )
    v4 = socket.AF_INET
    v6 = socket.AF_INET6
    mapped = socket.inet_pton(v6, "::ffff:127.0.0.1")
    found = proc_established_connections(8080, ((v4, str(tcp)), (v6, str(tcp6))))
    assert found == {
        (v4, LOOPBACK4, 8080, LOOPBACK4, 50000),
        (v4, socket.inet_aton("10.0.2.15"), 8080, socket.inet_aton("10.0.2.1"), 50004),
        (v6, LOOPBACK6, 8080, LOOPBACK6, 54321),
        (v6, mapped, 8080, mapped, 54322),
    }
    # no tcp6 file (kernel without IPv6): IPv4 only; no tcp file: an error
    missing = str(tmp_path / "absent")
    assert len(proc_established_connections(8080, ((v4, str(tcp)), (v6, missing)))) == 2
    with pytest.raises(FileNotFoundError):
        proc_established_connections(8080, ((v4, missing),))


def test_total_counts_new_connections_once(stack: ExitStack) -> None:
    srv = listen(stack)
    pairs = connect(stack, srv, 3)
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    assert source.collect() == {"active_connections": 3, "total_connections": 3}
    assert source.collect() == {"active_connections": 3, "total_connections": 3}

    pairs += connect(stack, srv, 2)
    assert source.collect() == {"active_connections": 5, "total_connections": 5}

    for sock in pairs.pop(0):
        sock.close()
    pairs += connect(stack, srv, 1)
    assert source.collect() == {"active_connections": 5, "total_connections": 6}
    assert source.collect() == {"active_connections": 5, "total_connections": 6}


def test_client_closed_connection_is_no_longer_active(stack: ExitStack) -> None:
    srv = listen(stack)
    (client, server_side), _ = connect(stack, srv, 2)
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    assert active(source) == 2

    client.close()
    assert server_side.recv(1) == b""  # the FIN has arrived: our end is now CLOSE_WAIT
    # The socket still exists on our port, so only the state filter keeps it out.
    assert sorted(proc_states(port_of(srv))) == ["01", "08", "0A"]
    assert source.collect() == {"active_connections": 1, "total_connections": 2}


def test_server_closed_connection_in_fin_wait_or_time_wait_is_not_active(
    stack: ExitStack,
) -> None:
    srv = listen(stack)
    pairs = connect(stack, srv, 3)
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    assert active(source) == 3

    for _, server_side in pairs:
        server_side.close()  # active close: the kernel keeps our end as FIN_WAIT1/FIN_WAIT2
    lingering = [s for s in proc_states(port_of(srv)) if s != "0A"]
    assert len(lingering) == 3  # still on our port, so only the state filter keeps them out
    assert set(lingering) <= {"04", "05"}  # FIN_WAIT1, FIN_WAIT2
    assert source.collect() == {"active_connections": 0, "total_connections": 3}

    for client, _ in pairs:
        assert client.recv(1) == b""
        client.close()  # our end goes TIME_WAIT (a timewait socket, still on our port)
    assert "01" not in proc_states(port_of(srv))
    assert source.collect() == {"active_connections": 0, "total_connections": 3}
    assert proc_established_connections(port_of(srv)) == set()


def test_falls_back_to_proc_when_netlink_cannot_be_opened(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = listen(stack)
    connect(stack, srv, 4)
    opened = []

    def refuse(**_: object) -> NetlinkDiag:
        opened.append(1)
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(connections, "NetlinkDiag", refuse)
    source = ConnectionSource(port_of(srv))
    assert source.collect() == {"active_connections": 4, "total_connections": 4}
    assert source.backend == "proc"
    assert active(source) == 4
    assert len(opened) == 1  # a permanent error: not retried every tick
    assert len(established_connections(port_of(srv))) == 4


def test_transient_netlink_error_falls_back_for_one_tick(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = listen(stack)
    connect(stack, srv, 2)
    source = ConnectionSource(port_of(srv))
    stack.callback(source.close)
    real = NetlinkDiag.established

    def fail_once(self: NetlinkDiag, port: int) -> set[ConnectionId]:
        monkeypatch.setattr(NetlinkDiag, "established", real)
        raise OSError(errno.ENOBUFS, "No buffer space available")

    monkeypatch.setattr(NetlinkDiag, "established", fail_once)
    assert active(source) == 2
    assert source.backend == "proc"
    assert active(source) == 2
    assert source.backend == "netlink"


def test_source_error_when_netlink_and_proc_both_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_netlink(**_: object) -> NetlinkDiag:
        raise OSError(errno.EPERM, "Operation not permitted")

    def no_proc(port: int) -> set[ConnectionId]:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/net/tcp")

    monkeypatch.setattr(connections, "NetlinkDiag", no_netlink)
    monkeypatch.setattr(tcp_connections, "proc_established_connections", no_proc)
    source = ConnectionSource(8080)
    with pytest.raises(SourceError, match=r"port 8080.*netlink.*not permitted.*/proc/net/tcp"):
        source.collect()


@pytest.mark.parametrize(
    ("build", "reply_type", "header"),
    [
        (lambda port: NetlinkDiag._request(socket.AF_INET, port), SOCK_DIAG_BY_FAMILY, 56),
        (NetlinkDiag._compat_request, TCPDIAG_GETSOCK, 60),
    ],
    ids=["per-family", "single-dump"],
)
def test_kernel_error_reply_raises_oserror(
    stack: ExitStack, build: Callable[[int], bytes], reply_type: int, header: int
) -> None:
    """A request the kernel rejects comes back as NLMSG_ERROR and surfaces as OSError: both
    request kinds have their bytecode audited, so both also run it."""
    srv = listen(stack)
    request = bytearray(build(port_of(srv)))
    # The first bytecode op's "no" jump (last 2 bytes of its 4) is not a multiple of 4.
    first_op = 16 + header + 4
    request[first_op + 2 : first_op + 4] = (6).to_bytes(2, sys.byteorder)
    with NetlinkDiag() as diag, pytest.raises(OSError) as caught:
        diag._dump(bytes(request), reply_type, set())
    assert caught.value.errno == errno.EINVAL


def test_closed_netlink_socket(stack: ExitStack) -> None:
    diag = NetlinkDiag()
    diag.close()
    diag.close()  # idempotent
    with pytest.raises(OSError):
        diag.established(80)
    source = ConnectionSource(port_of(listen(stack)))
    source.collect()
    source.close()
    source.close()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 10)), max_size=40),
)
def test_total_counts_each_connection_once_property(intervals: list[tuple[int, int]]) -> None:
    """Connection i is open during ticks [start, start + length); ids are never reused."""

    def ident(i: int) -> ConnectionId:
        return (socket.AF_INET, LOOPBACK4, 8080, LOOPBACK4, 10000 + i)

    ticks = [
        {ident(i) for i, (start, length) in enumerate(intervals) if start <= t < start + length}
        for t in range(10)
    ]
    source = ConnectionSource(8080)
    feed = iter(ticks)
    source._established = lambda: next(feed)  # type: ignore[method-assign]
    seen: set[ConnectionId] = set()
    for current in ticks:
        seen |= current
        assert source.collect() == {
            "active_connections": len(current),
            "total_connections": len(seen),
        }
        assert source._previous == current  # memory: only the last tick's set is kept
    assert len(seen) == len(intervals)
