"""Slow, stalled and idle clients against the real daemon: whole-request deadlines, the idle
timeout, oldest-idle eviction at the connection limit, and an answer for every request.

Bounds in these tests are generous loop limits (a dribbling client gives up after 30 s of
trying), never timing assertions: each test fails because the server did the wrong thing,
not because the machine was slow.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.conftest import RunningDaemon, launch_daemon
from tests.helpers import wait_for

SCRAPE = b"GET /metrics/prometheus HTTP/1.1\r\nHost: x\r\n\r\n"


def config(tmp_path: Path, **http: object) -> str:
    path = tmp_path / f"exporter-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(json.dumps({"interval": "1s", "http": http}))
    return str(path)


_readers: dict[int, BinaryIO] = {}


def read_response(sock: socket.socket, head_only: bool = False
                  ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read off a keep-alive socket (buffered
    per socket, so pipelined responses are read one after the other)."""
    f = _readers.setdefault(id(sock), sock.makefile("rb"))
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("closed by the server")
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.lower()] = value.strip()
    body = b"" if head_only else f.read(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket, timeout: float = 20) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_a_client_dribbling_headers_is_cut_at_the_deadline(daemon_factory, tmp_path: Path) -> None:
    d: RunningDaemon = daemon_factory("--config", config(tmp_path, request_timeout="1s"))
    sock = socket.create_connection((d.host, d.port), timeout=5)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
    received = b""
    sent = 0
    try:
        for i in range(100):  # one header line every 0.3 s: 30 s if never cut
            sock.sendall(b"X-Dribble-%d: a\r\n" % i)
            sent += 1
            sock.settimeout(0.3)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            received += chunk
            if not chunk or b"\r\n\r\n" in received:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 408 "), (sent, received[:200])
    assert b'"error"' in received and b"within 1 s" in received
    assert sent < 100, "the server let the client dribble for the whole loop"


def test_http_09_request_gets_an_answer(daemon: RunningDaemon) -> None:
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics\r\n")
        status, headers, body = read_response(sock)
    assert status == 505
    assert headers["content-type"] == "application/json"
    assert "HTTP/0.9" in json.loads(body)["error"]
    assert "Traceback" not in daemon.log()


def test_stalled_clients_beyond_the_old_cap_do_not_delay_a_scrape(daemon: RunningDaemon) -> None:
    stalls = [b"GET /metrics/prom", b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b""]
    held = []
    try:
        for i in range(300):  # the thread-per-connection server held 64 and refused the rest
            s = socket.create_connection((daemon.host, daemon.port), timeout=10)
            if stalls[i % 3]:
                s.sendall(stalls[i % 3])
            held.append(s)

        def scrape(_: int) -> int:
            with urllib.request.urlopen(daemon.url + "/metrics/prometheus", timeout=10) as r:
                assert b"crankshaft_memory_usage_mb" in r.read()
                return r.status

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(scrape, range(40))) == [200] * 40
        # The stalled clients are still connected: nobody was refused to serve the scrapes.
        for s in held[:: 3]:
            s.settimeout(0)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in held:
            s.close()


def test_at_the_limit_the_oldest_idle_connection_goes(daemon_factory, tmp_path: Path) -> None:
    d: RunningDaemon = daemon_factory("--config", config(tmp_path, max_connections=4))
    socks = []
    try:
        for _ in range(4):  # four keep-alive connections, each served once, now idle
            s = socket.create_connection((d.host, d.port), timeout=10)
            s.sendall(SCRAPE)
            assert read_response(s)[0] == 200
            socks.append(s)
        newcomer = socket.create_connection((d.host, d.port), timeout=10)
        newcomer.sendall(SCRAPE)
        assert read_response(newcomer)[0] == 200, "the new client was refused"
        socks.append(newcomer)
        assert closed_by_server(socks[0]), "the oldest idle connection was kept"
        for s in socks[1:]:  # the others still serve
            s.sendall(SCRAPE)
            assert read_response(s)[0] == 200
    finally:
        for s in socks:
            s.close()


def test_at_the_limit_a_fresh_client_beats_the_slowest_request(daemon_factory,
                                                               tmp_path: Path) -> None:
    d: RunningDaemon = daemon_factory("--config", config(tmp_path, max_connections=3))
    slow = []
    try:
        for i in range(3):  # three half-sent requests: none idle
            s = socket.create_connection((d.host, d.port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow-%d: 1\r\n" % i)
            slow.append(s)
        wait_for(lambda: _scrape_ok(d), "a scrape at the connection limit")
        assert closed_by_server(slow[0]), "the oldest half-sent request was kept"
    finally:
        for s in slow:
            s.close()


def _scrape_ok(d: RunningDaemon) -> bool:
    with socket.create_connection((d.host, d.port), timeout=10) as s:
        s.sendall(SCRAPE)
        return read_response(s)[0] == 200


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(daemon_factory,
                                                                     tmp_path: Path) -> None:
    d: RunningDaemon = daemon_factory("--config", config(tmp_path, idle_timeout="1s"))
    with socket.create_connection((d.host, d.port), timeout=10) as s:
        s.sendall(SCRAPE)
        assert read_response(s)[0] == 200
        assert closed_by_server(s, timeout=30)


def test_pipelined_requests_are_answered_in_order(daemon: RunningDaemon) -> None:
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as s:
        s.sendall(b"GET /metrics/alerts HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /metrics/summary HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_response(s)
        second = read_response(s)
        third = read_response(s, head_only=True)
        assert (first[0], second[0], third[0]) == (200, 404, 200)
        assert json.loads(first[2]) == []
        assert int(third[1]["content-length"]) > 0


def test_expect_100_continue_is_honoured(daemon: RunningDaemon) -> None:
    body = b'{"latency_ms": {"/x": [1.0]}}'
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as s:
        s.sendall(b"POST /metrics/record HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert read_response(s)[0] == 200


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_is_survived_without_spinning(daemon: RunningDaemon) -> None:
    # The limit is lowered under the running daemon, below what max_connections assumed.
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (100, 100))
    held = []
    try:
        for _ in range(200):  # the kernel queues what the daemon cannot accept
            held.append(socket.create_connection((daemon.host, daemon.port), timeout=10))
        wait_for(lambda: "out of file descriptors" in daemon.log(), "the EMFILE warning")
        before = _cpu_seconds(daemon.pid)
        threading.Event().wait(3)  # a window to see whether the accept loop spins
        spent = _cpu_seconds(daemon.pid) - before
        assert spent < 1.5, f"{spent:.2f} s of CPU in 3 s: the accept loop is spinning"
        wait_for(lambda: _scrape_ok(daemon), "a scrape while out of descriptors")
        assert daemon.log().count("out of file descriptors") == 1  # said once, not per try
    finally:
        for s in held:
            s.close()


def test_a_tls_client_on_the_plain_port_is_told_at_once(daemon: RunningDaemon) -> None:
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        status, _, body = read_response(s)
    assert status == 400 and "not TLS" in json.loads(body)["error"]


def test_http_10_keep_alive_only_when_asked(daemon: RunningDaemon) -> None:
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as s:
        s.sendall(b"GET /metrics/alerts HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_response(s)
        assert (status, headers["connection"]) == (200, "keep-alive")
        s.sendall(b"GET /metrics/alerts HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(s)
        assert (status, headers["connection"]) == (200, "close")
        assert closed_by_server(s)


def _open_files_limit(pid: int) -> tuple[int, int]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert match, limits
    return int(match.group(1)), int(match.group(2))


def _start_with_nofile(tmp_path: Path, soft: int, hard: int) -> RunningDaemon:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is not installed")
    argv = [prlimit, f"--nofile={soft}:{hard}", "--", sys.executable, "-m", "exporter", "run",
            "--listen", "127.0.0.1:0", "--interval", "1", "--log-level", "DEBUG"]
    return launch_daemon(argv, tmp_path / f"daemon-{time.monotonic_ns()}.log",
                         dict(os.environ))


def test_the_soft_open_files_limit_is_raised_to_the_hard_one_at_start(tmp_path: Path) -> None:
    d = _start_with_nofile(tmp_path, 256, 4096)
    try:
        assert b"exporter" in Path(f"/proc/{d.pid}/cmdline").read_bytes()  # prlimit exec'd it
        assert _open_files_limit(d.pid) == (4096, 4096)
        assert "raised the open-files limit from 256 to 4096" in d.log()
        assert _scrape_ok(d)
    finally:
        d.stop()


def test_max_connections_is_kept_within_the_descriptor_limit(tmp_path: Path) -> None:
    d = _start_with_nofile(tmp_path, 300, 300)  # nothing to raise; 1024 would not fit
    try:
        assert _open_files_limit(d.pid) == (300, 300)
        assert ("http.max_connections 1024 is above what the open-files limit (300) allows; "
                "using 236") in d.log()
    finally:
        d.stop()
