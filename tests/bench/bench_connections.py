"""Cost of one ConnectionSource.collect(): netlink sock_diag against the /proc/net/tcp anchor.

Run from the repository root: ``python -m tests.bench.bench_connections``.  It opens 0, 100
and 1000 established loopback connections to one listening port (both ends live in this
process, so /proc/net/tcp{,6} holds two lines per connection) and times warm collects of:

- the production path: one ``TCPDIAG_GETSOCK`` dump covering IPv4 and IPv6 (one walk of the
  kernel's established hash);
- the per-family fallback: two ``SOCK_DIAG_BY_FAMILY`` dumps (two walks), for comparison;
- the /proc/net/tcp{,6} reader, the anchor the ratio divides by;
- "walk only": the production query for an idle port, which matches nothing.  The kernel still
  walks every bucket and tests every socket of the host, so this is the fixed cost that no
  filter avoids; the production figure minus this one is what our own connections cost.

Under the table: the hash size, the host's TCP socket count, and the round trip of a dump that
asks for no state at all (the kernel then skips every walk: netlink and Python overhead only).

The five measurements of a row take turns, round after round, so that load from elsewhere on a
shared machine lands on all of them alike; each figure is the median over the rounds.  The
connections are closed with a RST (SO_LINGER 0): a FIN close would leave 1000 TIME_WAIT sockets
in the hash for a minute, lengthening the walk of a benchmark started right after.
"""

from __future__ import annotations

import platform
import resource
import socket
import statistics
import struct
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from exporter.sources.connections import ConnectionSource
from exporter.sources.readers.tcp_connections import TCPDIAG_GETSOCK, NetlinkDiag
from tests.bench.harness import median_seconds_per_call, table, us

COUNTS = (0, 100, 1000)
REPEAT = 7  # rounds
_NO_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST, no TIME_WAIT
NETLINK_CALLS = 200
PROC_CALLS = 30  # ~10-20 ms each: 200 would take minutes; the median of means is as stable


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"need {needed} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ehash_entries() -> str:
    """The established-hash size: every dump, and every /proc read, walks all of its buckets."""
    try:
        return Path("/proc/sys/net/ipv4/tcp_ehash_entries").read_text().strip()
    except OSError:
        return "unknown"


def tcp_sockets() -> str:
    """The TCP line of /proc/net/sockstat (sockets in use, TIME_WAIT, ...) for this namespace."""
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                return line.removeprefix("TCP:").strip()
    except OSError:
        pass
    return "unknown"


def no_walk_request(port: int) -> bytes:
    """The production request with an empty state mask: the kernel walks no hash at all."""
    request = bytearray(NetlinkDiag._compat_request(port))
    struct.pack_into("=I", request, 16 + 52, 0)  # inet_diag_req.idiag_states
    return bytes(request)


def interleaved(cases: list[tuple[Callable[[], object], int]]) -> list[float]:
    """Median seconds per call of each (function, calls per round), the cases taking turns."""
    runs: list[list[float]] = [[] for _ in cases]
    for _ in range(REPEAT):
        for (fn, number), times in zip(cases, runs, strict=True):
            times.append(median_seconds_per_call(fn, number=number, repeat=1))
    return [statistics.median(times) for times in runs]


def open_connection(stack: ExitStack, srv: socket.socket) -> None:
    client = stack.enter_context(socket.create_connection(srv.getsockname(), timeout=10))
    server_side = stack.enter_context(srv.accept()[0])
    for sock in (client, server_side):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)


def main() -> None:
    raise_fd_limit(2 * max(COUNTS) + 64)
    rows: list[list[object]] = []
    with ExitStack() as stack:
        srv = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        srv.bind(("127.0.0.1", 0))
        srv.listen(max(COUNTS) + 16)
        srv.settimeout(10)
        port = srv.getsockname()[1]
        idle = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        idle.bind(("127.0.0.1", 0))
        idle.listen(1)
        idle_port = idle.getsockname()[1]

        single = ConnectionSource(port)
        stack.callback(single.close)
        per_family = ConnectionSource(port)
        per_family._diag = NetlinkDiag(single_dump=False)  # the fallback, timed on purpose
        stack.callback(per_family.close)
        proc = ConnectionSource(port, netlink=False)
        walk = stack.enter_context(NetlinkDiag())

        opened = 0
        for count in COUNTS:
            for _ in range(count - opened):
                open_connection(stack, srv)
            opened = count
            for source, backend in ((single, "netlink"), (per_family, "netlink"), (proc, "proc")):
                active = source.collect()["active_connections"]
                if active != count or source.backend != backend:
                    raise SystemExit(f"{backend}: {active} connections via {source.backend}")
            if single._diag is None or not single._diag.single_dump:
                raise SystemExit("the kernel refused the single IPv4+IPv6 dump")
            if walk.established(idle_port):
                raise SystemExit("the idle port has connections")

            ours, two, anchor, fixed = interleaved(
                [
                    (single.collect, NETLINK_CALLS),
                    (per_family.collect, NETLINK_CALLS),
                    (proc.collect, PROC_CALLS),
                    (lambda: walk.established(idle_port), NETLINK_CALLS),
                ]
            )
            rows.append([count, us(ours), us(two), us(anchor), f"{ours / anchor:.3f}", us(fixed)])
        sockets = tcp_sockets()
        request = no_walk_request(idle_port)
        (no_walk,) = interleaved([(lambda: walk._dump(request, TCPDIAG_GETSOCK, set()), 1000)])
    print(
        table(
            "Connection count on one port: one collect() (ratio = production / /proc anchor; "
            "goal ≤ 1000 µs at 1000 connections)",
            [
                "connections",
                "production: 1 dump, IPv4+IPv6 µs",
                "fallback: 2 dumps µs",
                "/proc/net anchor µs",
                "ratio",
                "walk only (idle port) µs",
            ],
            rows,
        )
    )
    print(
        f"median of {REPEAT} interleaved rounds of {NETLINK_CALLS} (netlink) / {PROC_CALLS} "
        f"(/proc) warm calls; kernel {platform.release()}\n\n"
        f"- tcp_ehash_entries = {ehash_entries()} (buckets every dump walks)\n"
        f"- host TCP sockets with {max(COUNTS)} connections open (/proc/net/sockstat): {sockets}\n"
        f"- a dump asking for no state, so walking no hash: {us(no_walk)} µs\n"
    )


if __name__ == "__main__":
    main()
