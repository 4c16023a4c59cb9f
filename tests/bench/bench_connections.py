"""Cost of one ConnectionSource.collect(): netlink sock_diag against the /proc/net/tcp anchor.

Run from the repository root: ``python -m tests.bench.bench_connections``.  It opens 0, 100
and 1000 established loopback connections to one listening port (both ends live in this
process, so /proc/net/tcp{,6} holds two lines per connection) and times warm collects.
"""

from __future__ import annotations

import resource
import socket
from contextlib import ExitStack
from pathlib import Path

from exporter.sources.connections import ConnectionSource
from tests.bench.harness import median_seconds_per_call, table, us

COUNTS = (0, 100, 1000)
REPEAT = 7
NETLINK_CALLS = 200
PROC_CALLS = 30  # ~10-20 ms each: 200 would take minutes; the median of means is as stable


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"need {needed} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ehash_entries() -> str:
    """The established-hash size: both backends walk every bucket of it, per family."""
    try:
        return Path("/proc/sys/net/ipv4/tcp_ehash_entries").read_text().strip()
    except OSError:
        return "unknown"


def main() -> None:
    raise_fd_limit(2 * max(COUNTS) + 64)
    rows: list[list[object]] = []
    with ExitStack() as stack:
        srv = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        srv.bind(("127.0.0.1", 0))
        srv.listen(max(COUNTS) + 16)
        srv.settimeout(10)
        port = srv.getsockname()[1]
        netlink = ConnectionSource(port)
        stack.callback(netlink.close)
        proc = ConnectionSource(port, netlink=False)
        opened = 0
        for count in COUNTS:
            for _ in range(count - opened):
                stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                stack.enter_context(srv.accept()[0])
            opened = count
            for source, backend in ((netlink, "netlink"), (proc, "proc")):
                active = source.collect()["active_connections"]
                if active != count or source.backend != backend:
                    raise SystemExit(f"{backend}: {active} connections via {source.backend}")
            ours = median_seconds_per_call(netlink.collect, number=NETLINK_CALLS, repeat=REPEAT)
            anchor = median_seconds_per_call(proc.collect, number=PROC_CALLS, repeat=REPEAT)
            rows.append([count, us(ours), us(anchor), f"{ours / anchor:.3f}"])
    print(
        table(
            "Connection count on one port: one collect() (IPv4 + IPv6 dump; "
            "ratio = netlink / /proc anchor; goal ≤ 1000 µs at 1000 connections)",
            ["connections", "netlink median µs", "/proc/net median µs", "ratio"],
            rows,
        )
    )
    print(
        f"median of {REPEAT} runs of {NETLINK_CALLS} (netlink) / {PROC_CALLS} (/proc) warm "
        f"calls; tcp_ehash_entries = {ehash_entries()}\n"
    )


if __name__ == "__main__":
    main()
