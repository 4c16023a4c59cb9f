"""Scrapes while hostile or idle clients hold connections open.

Two rounds against the real daemon on loopback, each with a scraper asking
``/metrics/prometheus`` every 0.5 s on a new connection (the hardest case: it must get
through accept too):

- slow headers: 1,000 connections each sending one header line every 2 s (when the server
  cuts one at its request deadline, it reconnects at once);
- idle keep-alive: 2,000 connections that made one request and then sit idle.

Reported: how many scrapes were answered, their median/p99/max latency, and the daemon's
threads and RSS before, during and after.  Goal: every scrape answered, p99 <= 100 ms.
The client side runs in this process on one asyncio loop; the scraper on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.bench.harness import table
from tests.prometheus_server import free_port

REPO = Path(__file__).resolve().parents[2]
SCRAPE = b"GET /metrics/prometheus HTTP/1.1\r\nHost: bench\r\n\r\n"
ROUND_S = 30.0
SCRAPE_EVERY_S = 0.5


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MiB) of a process, from /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def _start_daemon(port: int, tmp: Path) -> subprocess.Popen:
    cfg = tmp / "exporter.yaml"
    cfg.write_text("interval: 1s\nlogging: {level: WARNING}\n"
                   "http: {max_connections: 4096, request_timeout: 10s, idle_timeout: 120s}\n")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg),
                             "--listen", f"127.0.0.1:{port}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _one_scrape(port) is not None:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the daemon did not start")


def _one_scrape(port: int) -> float | None:
    """Seconds for one scrape on a new connection; None if it was not answered with 200."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(SCRAPE)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                return None
            body += chunk
    if not head.startswith(b"HTTP/1.1 200 "):
        return None
    return time.perf_counter() - t0


def _scraper(port: int, stop: threading.Event, results: list[float | None]) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            results.append(_one_scrape(port))
        except OSError:
            results.append(None)
        next_at += SCRAPE_EVERY_S
        stop.wait(max(0.0, next_at - time.monotonic()))


async def _slow_client(port: int, stop: asyncio.Event, counters: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counters["connect_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        counters["connects"] += 1
        try:
            writer.write(b"GET /metrics/prometheus HTTP/1.1\r\n")
            i = 0
            while not stop.is_set():
                try:
                    async with asyncio.timeout(2.0):
                        await reader.read(65536)  # the 408 or the close: we were cut
                    counters["cut"] += 1
                    break
                except TimeoutError:
                    writer.write(b"X-Slow-%d: a\r\n" % i)
                    i += 1
        except OSError:
            counters["cut"] += 1
        finally:
            writer.close()


async def _idle_client(port: int, stop: asyncio.Event, counters: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        counters["connects"] += 1
    except OSError:
        counters["connect_errors"] += 1
        return
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    if not await reader.read(65536):
                        counters["cut"] += 1
                        return
    finally:
        writer.close()


def _round(port: int, pid: int, kind: str, n: int) -> list[object]:
    counters = {"connects": 0, "connect_errors": 0, "cut": 0}
    before = _proc_status(pid)
    during: list[tuple[int, float]] = []
    results: list[float | None] = []

    async def main() -> None:
        stop = asyncio.Event()
        client = _slow_client if kind == "slow" else _idle_client
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(client(port, stop, counters)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # let the kernel's accept queue breathe
        settle = time.monotonic() + 30  # all connected first: measure the steady state
        while counters["connects"] + counters["connect_errors"] < n and time.monotonic() < settle:
            await asyncio.sleep(0.1)
        stop_scraper = threading.Event()
        scraper = threading.Thread(target=_scraper, args=(port, stop_scraper, results))
        scraper.start()
        end = time.monotonic() + ROUND_S
        while time.monotonic() < end:
            await asyncio.sleep(5)
            during.append(_proc_status(pid))
        stop_scraper.set()
        await asyncio.to_thread(scraper.join)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    time.sleep(2)  # the daemon notices the closes
    after = _proc_status(pid)
    answered = [r for r in results if r is not None]
    ms = sorted(r * 1e3 for r in answered)
    p99 = ms[max(0, int(len(ms) * 0.99 + 0.5) - 1)] if ms else float("nan")
    peak = max(during, key=lambda s: s[1]) if during else before
    what = (f"{n:,} connections sending a header line every 2 s" if kind == "slow"
            else f"{n:,} idle keep-alive connections")
    return [what, f"{len(answered)}/{len(results)}",
            f"{statistics.median(ms):.1f}" if ms else "-", f"{p99:.1f}",
            f"{ms[-1]:.1f}" if ms else "-",
            f"{before[0]} / {max(s[0] for s in during) if during else '-'} / {after[0]}",
            f"{before[1]:.0f} / {peak[1]:.0f} / {after[1]:.0f}",
            f"{counters['connects']:,} ({counters['cut']:,} cut)"]


def bench_slow_clients() -> str:
    _raise_fd_limit()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = _start_daemon(port, Path(tmp))
        try:
            rows = [_round(port, proc.pid, "slow", 1000), _round(port, proc.pid, "idle", 2000)]
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return table(
        f"Scrapes of /metrics/prometheus every {SCRAPE_EVERY_S} s, new connection each, while "
        f"other clients hold connections ({ROUND_S:.0f} s per row; goal: every scrape "
        "answered, p99 ≤ 100 ms)",
        ["other clients", "scrapes answered", "median ms", "p99 ms", "max ms",
         "daemon threads before / during / after", "daemon RSS MiB before / peak / after",
         "their connections (cut by the server)"],
        rows,
    )


def main() -> None:
    print(bench_slow_clients())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
