"""Hostile clients against the daemon's memory, with Prometheus as the Go anchor.

Each round starts a fresh server, opens ``N`` connections of one hostile kind, holds them
for ``HOLD_S`` (longer than the default 10 s request deadline) while a scraper asks for the
metrics every 0.25 s on a new connection, then closes them all.  Reported per round: RSS at
start (after one client has asked once for each answer the round's clients ask for: the
caches one request makes are not the crowd's), its peak while they were connected (sampled
every 50 ms), RSS a few seconds after they left, and the scrapes answered with their p99.
The anchor is Debian's Prometheus 2.42 (Go net/http + exporter-toolkit) with the same
web-config file, in the same run.

Kinds: plain idle (connect, send nothing); TLS idle; slow ClientHello (half a ClientHello,
then nothing); quiet handshakes (a completed TLS handshake, then nothing); clients that ask
for the largest JSON answer (``/metrics?last_n=1440``; Prometheus: its ``/metrics``) with a
4 KiB receive buffer and never read, plain and over TLS; the same for
``/metrics/history``; and a mix of all of them.

Environment: ``BENCH_HOSTILE_ONLY`` runs only the rounds whose label contains one of its
comma-separated parts (labels are ``"<plain|TLS>: <kind> @ <server>"``, e.g.
``BENCH_HOSTILE_ONLY="TLS: JSON non-reader @ crank,plain: mixed"``); ``BENCH_HOSTILE_N``
(connections per round, 1000) and ``BENCH_HOSTILE_HOLD_S`` (12) shorten a run while
iterating.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.bench.harness import table
from tests.prometheus_server import free_port
from tests.tlsfiles import CA, client_context

REPO = Path(__file__).resolve().parents[2]
N = int(os.environ.get("BENCH_HOSTILE_N", "1000"))
HOLD_S = float(os.environ.get("BENCH_HOSTILE_HOLD_S", "12"))
AFTER_S = 4.0
WARM_UP_S = 1.5
ONLY = os.environ.get("BENCH_HOSTILE_ONLY", "")
SCRAPE_EVERY_S = 0.25
LAST_N = 1440


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    tls: ssl.SSLContext | None
    scrape_path: str
    big_path: str


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_up(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _one_scrape(server) is not None:
            return
        time.sleep(0.2)
    server.proc.kill()
    raise RuntimeError(f"{server.name} did not start")


def _history_file(tmp: Path) -> Path:
    """A state file holding a day of samples a minute apart, so that ``last_n=1440`` is the
    large answer a long-running daemon gives (~0.7 MB of JSON)."""
    from exporter import MetricsEndpoint
    from exporter.history.snapshots import capture, write_atomically
    from exporter.store import StoreSettings

    now = [time.time() - LAST_N * 60.0]
    ep = MetricsEndpoint(sources=[], clock=lambda: now[0], rules=(),
                         settings=StoreSettings(capacity=LAST_N))
    for i in range(LAST_N):
        now[0] += 60.0
        ep.record_memory_usage(300.0 + i % 50)
        ep.record_cpu_usage(i % 97 + 0.25)
        ep.record_websocket_connections(i % 7, i)
        ep.record_request_latency(f"/api/{i % 5}", 10.0 + i % 30)
    path = tmp / "history-seed.bin"
    write_atomically(str(path), capture(ep.recorder))
    return path


def _start_exporter(tmp: Path, web: Path | None, tls: ssl.SSLContext | None) -> Server:
    port = free_port()
    cfg = tmp / f"exporter-{port}.yaml"
    state = tmp / f"history-{port}.bin"
    shutil.copy(tmp / "history-seed.bin", state)
    doc: dict[str, object] = {"interval": "1s", "logging": {"level": "WARNING"},
                              "history": {"state_file": str(state), "max_samples": LAST_N}}
    cfg.write_text(yaml.safe_dump(doc))
    argv = [sys.executable, "-m", "exporter", "run", "--config", str(cfg),
            "--listen", f"127.0.0.1:{port}"]
    if web is not None:
        argv += ["--web.config.file", str(web)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = Server("crankshaft-exporter", proc, port, tls, "/metrics/prometheus",
                    f"/metrics?last_n={LAST_N}")
    _wait_up(server)
    return server


def _start_prometheus(tmp: Path, web: Path | None, tls: ssl.SSLContext | None) -> Server:
    port = free_port()
    folder = tmp / f"prom-{port}"
    folder.mkdir()
    (folder / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    argv = ["prometheus", f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            # Its default of 512 would leave the rest unaccepted (and cost it nothing).
            f"--web.max-connections={N + 256}", "--log.level=error"]
    if web is not None:
        argv.append(f"--web.config.file={web}")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("Prometheus 2.42", proc, port, tls, "/metrics", "/metrics")
    _wait_up(server)
    return server


def _stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def _one_scrape(server: Server) -> float | None:
    """Seconds for one scrape on a new connection; None unless answered 200 in full."""
    return _one_request(server, server.scrape_path)


def _one_request(server: Server, path: str) -> float | None:
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s: socket.socket = (server.tls.wrap_socket(raw, server_hostname="localhost")
                                if server.tls else raw)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except (OSError, ssl.SSLError):
        return None
    if not data.startswith(b"HTTP/1.1 200 "):
        return None
    return time.perf_counter() - t0


# --- hostile clients --------------------------------------------------------------------------


def _client_hello(ctx: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _idle(server: Server, held: list[object]) -> None:
    held.append(await _connect(server.port))


async def _slow_hello(server: Server, held: list[object]) -> None:
    assert server.tls is not None
    sock = await _connect(server.port)
    hello = _client_hello(server.tls)
    await asyncio.get_running_loop().sock_sendall(sock, hello[: len(hello) // 2])
    held.append(sock)


async def _quiet_handshake(server: Server, held: list[object]) -> None:
    sock = await _connect(server.port)
    _, writer = await asyncio.open_connection(sock=sock, ssl=server.tls,
                                              server_hostname="localhost", limit=1024)
    held.append(writer)


async def _non_reader(server: Server, held: list[object], path: str) -> None:
    sock = await _connect(server.port, rcvbuf=4096)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    if server.tls is None:
        await asyncio.get_running_loop().sock_sendall(sock, request)
        held.append(sock)
        return
    # The client's SSL layer reads at most 2 KiB into its buffer, then stops reading.
    _, writer = await asyncio.open_connection(sock=sock, ssl=server.tls,
                                              server_hostname="localhost", limit=1024)
    writer.write(request)
    held.append(writer)


def _close_all(held: list[object]) -> None:
    for h in held:
        with contextlib.suppress(Exception):
            if isinstance(h, socket.socket):
                h.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                h.close()
            else:
                sock = h.get_extra_info("socket")  # type: ignore[attr-defined]
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\0\0\0\0\0\0\0")
                h.transport.abort()  # type: ignore[attr-defined]


Kind = Callable[[Server, list[object]], "asyncio.Future[None] | object"]


def _paths(server: Server, kind: str, history: bool) -> list[str]:
    """What the round's clients ask for (``history``: as in :func:`_kinds`)."""
    paths = []
    if kind in ("JSON non-reader", "mixed"):
        paths.append(server.big_path)
    if kind in ("history non-reader", "mixed") and history:
        paths.append("/metrics/history")
    return paths


def _kinds(server: Server, history: bool) -> dict[str, Callable[[list[object]], object]]:
    big = server.big_path
    kinds: dict[str, Callable[[list[object]], object]] = {}
    kinds["idle"] = lambda held: _idle(server, held)
    if server.tls is not None:
        kinds["slow ClientHello"] = lambda held: _slow_hello(server, held)
        kinds["quiet handshake"] = lambda held: _quiet_handshake(server, held)
    kinds["JSON non-reader"] = lambda held: _non_reader(server, held, big)
    if history:
        kinds["history non-reader"] = lambda held: _non_reader(server, held, "/metrics/history")
    return kinds


def _warm_up(server: Server, paths: list[str]) -> None:
    """One client asks once, and reads, each answer the round's clients will ask for: the
    caches that one request makes (the JSON sample text, the history's, the last
    document; ~4 MiB together) are the server's, not the crowd's."""
    for path in paths:
        _one_request(server, path)
    time.sleep(WARM_UP_S)


def _round(server: Server, kinds: list[Callable[[list[object]], object]], n: int
           ) -> tuple[float, float, float, int, int, float, int]:
    """(RSS start, peak, after; scrapes answered, asked, p99 ms; clients connected)."""
    pid = server.proc.pid
    start = _rss_mib(pid)
    peak = [start]
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.05):
            peak[0] = max(peak[0], _rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list[float | None] = []
    stop_scraper = threading.Event()

    def scrape() -> None:
        while not stop_scraper.wait(SCRAPE_EVERY_S):
            results.append(_one_scrape(server))

    held: list[object] = []

    async def open_all() -> None:
        for i in range(n):
            kind = kinds[i % len(kinds)]
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
                async with asyncio.timeout(10):
                    await kind(held)  # type: ignore[misc]
        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        await asyncio.sleep(HOLD_S)
        stop_scraper.set()
        await asyncio.to_thread(scraper.join)
        _close_all(held)
        await asyncio.sleep(0.1)

    asyncio.run(open_all())
    time.sleep(AFTER_S)
    stop_sampling.set()
    sampler.join()
    after = _rss_mib(pid)
    answered = sorted(r * 1e3 for r in results if r is not None)
    p99 = answered[max(0, int(len(answered) * 0.99 + 0.5) - 1)] if answered else float("nan")
    return start, peak[0], after, len(answered), len(results), p99, len(held)


def bench_hostile() -> str:
    _raise_fd_limit()
    have_prometheus = shutil.which("prometheus") is not None
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _history_file(tmp)
        ca = CA(tmp / "pki")
        pair = ca.issue("server")
        web = tmp / "web.yml"
        web.write_text(yaml.safe_dump({"tls_server_config": {
            "cert_file": str(pair.cert), "key_file": str(pair.key)}}))
        ctx = client_context(ca)
        plans: list[tuple[str, Path | None, ssl.SSLContext | None]] = [
            ("plain", None, None), ("TLS", web, ctx)]
        for transport, web_file, tls in plans:
            starters: list[Callable[[Path, Path | None, ssl.SSLContext | None], Server]] = [
                _start_exporter]
            if have_prometheus:
                starters.append(_start_prometheus)
            for starter in starters:
                probe = starter(tmp, web_file, tls)
                is_exporter = starter is _start_exporter
                names = list(_kinds(probe, is_exporter))
                _stop(probe)
                for name in [*names, "mixed"]:
                    label = f"{transport}: {name} @ {probe.name}"
                    if ONLY and not any(o in label for o in ONLY.split(",")):
                        continue
                    server = starter(tmp, web_file, tls)
                    try:
                        kinds = _kinds(server, is_exporter)
                        chosen = list(kinds.values()) if name == "mixed" else [kinds[name]]
                        _warm_up(server, _paths(server, name, is_exporter))
                        start, peak, after, ok, asked, p99, held = _round(server, chosen, N)
                    finally:
                        _stop(server)
                    rows.append([f"{transport}: {name}", server.name, f"{held:,}",
                                 f"{start:.0f} / {peak:.0f} / {after:.0f}",
                                 f"+{peak - start:.0f}", f"{ok}/{asked}", f"{p99:.0f}"])
                    print(rows[-1], file=sys.stderr, flush=True)
    return table(
        f"Hostile clients: {N:,} connections of each kind held {HOLD_S:g} s, then closed "
        f"(a fresh server each round; scrapes every {SCRAPE_EVERY_S} s on a new connection; "
        "RSS at the start is read after one client asked once for each answer the round's "
        "clients ask for; Prometheus 2.42 with the same web-config file as the Go anchor)",
        ["round", "server", "clients connected", "RSS MiB start / peak / after",
         "peak growth MiB", "scrapes answered", "scrape p99 ms"],
        rows,
    )


def main() -> None:
    print(bench_hostile())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
