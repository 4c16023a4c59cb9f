"""Basic auth under a flood of distinct wrong passwords, and ``rate_limit``, on the real
daemon.  The flood once queued the real scraper's requests behind every pending bcrypt
check (42 scrapes in a row took ~20 s); now the scraper's verified credentials are answered
from the cache and a check that would wait too long is refused at once (503)."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import RunningDaemon
from tests.helpers import wait_for
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
