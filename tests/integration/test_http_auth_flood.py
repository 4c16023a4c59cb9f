"""Basic auth under a flood of distinct wrong passwords, and ``rate_limit``, on the real
daemon and on the in-process server.  The flood once queued the real scraper's requests
behind every pending bcrypt check (42 scrapes in a row took ~20 s); now the scraper's
verified credentials are answered from the cache, and a check that would wait too long is
refused (503), the refusal held back as long as the check could have waited, so that the
refused clients cannot keep the event loop busy asking again."""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from exporter.http.app import HttpSettings, Request, Response
from exporter.http.basicauth import BcryptQueue
from exporter.http.webconfig import load_web_config
from exporter.http.webwatch import WebConfigWatcher
from tests.conftest import RunningDaemon
from tests.helpers import wait_for
from tests.stand_in_app import StandInApp
from tests.tlsfiles import basic, bcrypt_hash, write_web_config

FLOODERS = 48
SCRAPES = 30


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_password_flood_neither_stalls_nor_locks_out_the_real_scraper(
        daemon_factory, tmp_path: Path) -> None:
    # Cost 12: each wrong password costs the daemon a few hundred milliseconds of bcrypt.
    web = write_web_config(tmp_path / "web.yml",
                           {"basic_auth_users": {"prom": bcrypt_hash("s3cret", cost=12)}})
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web))
    assert d.request("/metrics/prometheus", headers=basic("prom", "s3cret")).status == 200

    stop = threading.Event()
    flood_statuses: list[int] = []
    lock = threading.Lock()

    def flooder(n: int) -> None:
        conn = http.client.HTTPConnection(d.host, d.port, timeout=30)
        i = 0
        try:
            while not stop.is_set():
                i += 1
                conn.request("GET", "/metrics/prometheus",
                             headers={"Authorization": _auth("prom", f"guess-{n}-{i}")})
                r = conn.getresponse()
                r.read()
                with lock:
                    flood_statuses.append(r.status)
        finally:
            conn.close()

    def flood_running(n: int) -> bool:
        with lock:
            return len(flood_statuses) >= n

    scrapes: list[int] = []
    with ThreadPoolExecutor(FLOODERS) as pool:
        futures = [pool.submit(flooder, n) for n in range(FLOODERS)]
        try:
            wait_for(lambda: flood_running(FLOODERS) or any(f.done() for f in futures),
                     "every flooder's first answer")
            scraper = http.client.HTTPConnection(d.host, d.port, timeout=30)
            for _ in range(SCRAPES):
                scraper.request("GET", "/metrics/prometheus",
                                headers={"Authorization": _auth("prom", "s3cret")})
                r = scraper.getresponse()
                body = r.read()
                scrapes.append(r.status)
                if r.status == 200:
                    assert b"crankshaft_memory_usage_mb" in body
            scraper.close()
        finally:
            stop.set()
        for f in futures:
            f.result()

    assert scrapes == [200] * SCRAPES, scrapes
    assert set(flood_statuses) <= {401, 503}, set(flood_statuses)
    # Refused at once while the bcrypt thread was busy, instead of queued.
    assert flood_statuses.count(503) > 0
    assert flood_statuses.count(401) > 0
    assert "Traceback" not in d.log()


def test_rate_limit_answers_429_once_the_burst_is_spent(daemon_factory, tmp_path: Path) -> None:
    web = write_web_config(tmp_path / "web.yml",
                           {"rate_limit": {"interval": "1h", "burst": 3}})
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web))
    statuses = [d.request("/metrics/alerts").status for _ in range(3)]
    assert statuses == [200, 200, 200]
    r = d.request("/metrics/alerts")
    assert r.status == 429
    assert json.loads(r.body)["error"].startswith("too many requests")
    assert int(r.headers["retry-after"]) > 1
    assert "rate limit of one request every 3600s (burst 3)" in d.log()


class HelloApp(StandInApp):
    settings = HttpSettings()

    def handle(self, request: Request) -> Response:
        return Response(200, b"hello\n", "text/plain")


def _get(port: int, password: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET / HTTP/1.1\r\nHost: t\r\nAuthorization: {_auth('prom', password)}"
                 "\r\n\r\n".encode())
    return sock


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed without an answer"
        head += chunk
    return int(head.split(b" ", 2)[1])


def test_the_right_password_is_answered_while_the_queue_is_full_and_refusals_are_held(
        serve_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bcrypt

    busy = threading.Event()
    release = threading.Event()
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        if password != b"s3cret":  # the bcrypt thread is busy until the test releases it
            busy.set()
            release.wait(30)
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    web = write_web_config(tmp_path / "web.yml",
                           {"basic_auth_users": {"prom": bcrypt_hash("s3cret")}})
    server = serve_app(HelloApp(), WebConfigWatcher(load_web_config(web)))
    # Room for 3 checks (at the 50 ms a check is assumed to cost); refusals held an hour.
    server._bcrypt = server._shared.bcrypt = queue = BcryptQueue(max_wait_s=0.1,
                                                                 refuse_after_s=3600)
    right = _get(server.port, "s3cret")
    assert _status(right) == 200  # verified once, as a scraper that was there before
    right.close()

    flood = [_get(server.port, f"guess-{i}") for i in range(10)]
    try:
        wait_for(lambda: busy.is_set() and queue.waiting == 3 and queue.refused == 7,
                 "3 checks queued, 7 refused")
        for _ in range(5):
            scrape = _get(server.port, "s3cret")
            assert _status(scrape) == 200
            scrape.close()
        assert queue.waiting == 3 and queue.refused == 7, "the right password was checked"
        readable, _, _ = select.select(flood, [], [], 0)
        assert readable == [], "a refused or queued request was answered before its time"
        release.set()
        answered = wait_for(lambda: (r := select.select(flood, [], [], 0)[0]) and len(r) >= 3
                            and r, "the queued checks' answers")
        assert sorted(_status(s) for s in answered) == [401, 401, 401]
        held = [s for s in flood if s not in answered]
        assert select.select(held, [], [], 0)[0] == []  # the 7 refusals: still held
    finally:
        release.set()
        for s in flood:
            s.close()
