"""A distinct-password flood against basic auth, with Prometheus as the Go anchor.

The web-config file holds one user whose bcrypt hash has cost 10 (what ``htpasswd -B``
makes).  ``ATTACKERS`` keep-alive connections (reconnecting when the server closes one)
each send requests with a new wrong password as soon as the last one is answered, from a
process of their own, while a real scraper with the right password asks for the metrics
every ``SCRAPE_EVERY_S`` on one keep-alive connection (10 s timeout: Prometheus' scrape
timeout) for ``FLOOD_S``.  Its credentials were checked once before the flood, as a
Prometheus scraping all along would have.  Reported: scrapes answered 200 and their
latency, the attackers' answers by status, the server's CPU (a share of one core) and RSS.

Rows: the daemon alone (the scraper, no flood: what the machine gives in this run); the
daemon; the daemon with the web config's ``rate_limit`` (exporter-toolkit's
token bucket over all requests, the scraper's too); Debian's Prometheus 2.42 (Go net/http +
exporter-toolkit 0.8.2, which has no ``rate_limit``) with the same web-config file, each
a fresh server per round, medians over ``REPEATS`` rounds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import yaml

from tests.bench.bench_daemon import cpu_seconds, daemon, rss_mib
from tests.bench.bench_hostile import _raise_fd_limit, _start_prometheus, _stop
from tests.bench.harness import table
from tests.tlsfiles import bcrypt_hash

ATTACKERS = int(os.environ.get("BENCH_AUTH_ATTACKERS", "300"))
FLOOD_S = float(os.environ.get("BENCH_AUTH_FLOOD_S", "25"))
REPEATS = int(os.environ.get("BENCH_AUTH_REPEATS", "3"))
ONLY = os.environ.get("BENCH_AUTH_ONLY", "")  # e.g. "Prometheus": rows to run
SCRAPE_EVERY_S = 0.25
SCRAPE_TIMEOUT_S = 10.0
BCRYPT_COST = 10
USER, PASSWORD = "prom", "correct horse battery staple"
# What an exporter-toolkit user might set: 20 requests a second, 40 saved up.
RATE_LIMIT = {"interval": "50ms", "burst": 40}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the attackers, in a process of their own --------------------------------------------------


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, the server closes after it) of one answer, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") == "close"


async def _attacker(port: int, path: str, n: int, until: float, counts: Counter[str]) -> None:
    i = 0
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["connect refused"] += 1
            await asyncio.sleep(0.05)
            continue
        counts["connections"] += 1
        try:
            closes = False
            while not closes:
                i += 1
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: "
                             f"{_basic(USER, f'guess-{n}-{i}')}\r\n\r\n".encode())
                async with asyncio.timeout(max(until - time.monotonic(), 0.001)):
                    status, closes = await _read_answer(reader)
                counts[str(status)] += 1
        except TimeoutError:
            return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts["reset"] += 1
        finally:
            writer.close()


def _flood(port: int, path: str, attackers: int, seconds: float, out: Connection) -> None:
    """Runs in the child: ``attackers`` connections for ``seconds``; sends the counts."""
    async def main() -> Counter[str]:
        counts: Counter[str] = Counter()
        until = time.monotonic() + seconds
        out.send("started")
        await asyncio.gather(*(_attacker(port, path, n, until, counts)
                               for n in range(attackers)))
        return counts

    out.send(dict(asyncio.run(main())))


# --- the real scraper ---------------------------------------------------------------------------


def _scrape(port: int, path: str, until: float) -> tuple[list[float], Counter[str]]:
    """Latencies (s) of the scrapes answered 200 in full, and the others by outcome."""
    answered: list[float] = []
    failed: Counter[str] = Counter()
    conn: http.client.HTTPConnection | None = None
    headers = {"Authorization": _basic(USER, PASSWORD)}
    due = time.monotonic()
    while due < until:
        time.sleep(max(0.0, due - time.monotonic()))
        due += SCRAPE_EVERY_S
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT_S)
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            spent = time.perf_counter() - t0
        except (OSError, http.client.HTTPException) as e:
            failed["timed out" if isinstance(e, TimeoutError) else type(e).__name__] += 1
            conn.close()
            conn = None
            continue
        if r.status == 200:
            answered.append(spent)
        else:
            failed[f"answered {r.status}"] += 1
        if r.will_close:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return answered, failed


@dataclass
class Round:
    answered: list[float]
    failed: Counter[str]
    attackers: Counter[str]
    cpu_share: float  # of one core, over the flood
    rss_start: float
    rss_peak: float


def _flood_round(pid: int, port: int, path: str, attackers: int = ATTACKERS) -> Round:
    scraped, failed = _scrape(port, path, time.monotonic() + 1.0)  # checks the password once
    if not scraped:
        raise RuntimeError(f"the scraper's password was not accepted: {dict(failed)}")
    rss_start = rss_mib(pid)
    peak = [rss_start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ctx = multiprocessing.get_context("spawn")
    theirs, ours = ctx.Pipe(duplex=False)
    flood = ctx.Process(target=_flood, args=(port, path, attackers, FLOOD_S + 2.0, ours),
                        daemon=True)
    flood.start()
    try:
        if not theirs.poll(30) or theirs.recv() != "started":
            raise RuntimeError("the attackers did not start")
        time.sleep(1.0)  # the attackers connect and fill the queue
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        scraped, failed = _scrape(port, path, time.monotonic() + FLOOD_S)
        cpu_share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        if not theirs.poll(60):
            raise RuntimeError("the attackers did not finish")
        answers: Counter[str] = Counter(theirs.recv())
    finally:
        flood.join(10)
        if flood.is_alive():
            flood.kill()
        stop.set()
        sampler.join()
    return Round(scraped, failed, answers, cpu_share, rss_start, peak[0])


# --- servers --------------------------------------------------------------------------------


def _exporter_round(web: Path, attackers: int = ATTACKERS) -> Round:
    with daemon(f"interval: 1s\nhttp: {{web_config_file: {web}}}") as (proc, port):
        return _flood_round(proc.pid, port, "/metrics/prometheus", attackers)


def _prometheus_round(tmp: Path, web: Path) -> Round:
    # bench_hostile's start waits for a 200 without credentials; exporter-toolkit re-reads
    # the web-config file on every request, so the user is added once it is up.
    users = web.read_text()
    web.write_text("{}\n")
    server = _start_prometheus(tmp, web, None)
    try:
        web.write_text(users)
        deadline = time.monotonic() + 10
        while _unauthenticated_status(server.port) != 401:
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus did not take up basic_auth_users")
            time.sleep(0.1)
        return _flood_round(server.proc.pid, server.port, "/metrics")
    finally:
        _stop(server)
        web.write_text(users)


def _unauthenticated_status(port: int) -> int:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as c:
        c.request("GET", "/metrics")
        r = c.getresponse()
        r.read()
        return r.status


def _p(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, max(0, int(len(sorted_ms) * q + 0.5) - 1))]


def _latencies_ms(r: Round) -> list[float]:
    """Every scrape asked, sorted; one not answered 200 (timed out, 429) counts as ∞."""
    return sorted([s * 1e3 for s in r.answered] + [math.inf] * sum(r.failed.values()))


def _ms(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.1f}"


def _median_p99(rounds: list[Round]) -> tuple[float, float]:
    """The scrapes' median and p99, each the median over the rounds."""
    latencies = list(map(_latencies_ms, rounds))
    return (statistics.median(_p(ms, 0.5) for ms in latencies),
            statistics.median(_p(ms, 0.99) for ms in latencies))


def _row(label: str, server: str, rounds: list[Round], anchor: tuple[float, float] | None,
         is_anchor: bool) -> list[object]:
    med = statistics.median
    median, p99 = _median_p99(rounds)
    worst = med(_latencies_ms(r)[-1] for r in rounds)
    asked = med(len(r.answered) + sum(r.failed.values()) for r in rounds)
    failures = Counter[str]()
    for r in rounds:
        failures.update(r.failed)
    ratio = "1.00 / 1.00" if is_anchor else "-"
    if anchor is not None and not is_anchor:
        ratio = " / ".join("∞" if math.isinf(ours) else "anchor ∞" if math.isinf(theirs)
                           else f"{ours / theirs:.2f}"
                           for ours, theirs in zip((median, p99), anchor, strict=True))
    by_status = " / ".join(f"{med(r.attackers.get(s, 0) / FLOOD_S for r in rounds):,.0f}"
                           for s in ("401", "429", "503"))
    other = sum(v for r in rounds for k, v in r.attackers.items()
                if k not in ("401", "429", "503", "connections"))
    return [
        label, server,
        f"{med(len(r.answered) for r in rounds):.0f}/{asked:.0f}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(failures.items()))} in "
           f"{len(rounds)} rounds)" if failures else ""),
        _ms(median), _ms(p99), _ms(worst), ratio,
        by_status + (f" (+{other} other)" if other else ""),
        f"{med(r.attackers['connections'] for r in rounds):,.0f}",
        f"{med(r.cpu_share for r in rounds) * 100:.0f}%",
        f"{med(r.rss_start for r in rounds):.0f} / {med(r.rss_peak for r in rounds):.0f}",
    ]


def bench_auth_flood() -> str:
    _raise_fd_limit()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        users = {"basic_auth_users": {USER: bcrypt_hash(PASSWORD, cost=BCRYPT_COST)}}
        web = tmp / "web.yml"
        web.write_text(yaml.safe_dump(users))
        limited = tmp / "web-rate-limited.yml"
        limited.write_text(yaml.safe_dump({**users, "rate_limit": RATE_LIMIT}))
        plans: list[tuple[str, str, Callable[[], Round]]] = [
            ("no flood (baseline)", "crankshaft-exporter", lambda: _exporter_round(web, 0)),
            ("basic auth", "crankshaft-exporter", lambda: _exporter_round(web)),
            (f"basic auth + rate_limit {RATE_LIMIT['interval']}, burst {RATE_LIMIT['burst']}",
             "crankshaft-exporter", lambda: _exporter_round(limited)),
        ]
        if shutil.which("prometheus") is not None:
            plans.append(("basic auth", "Prometheus 2.42", lambda: _prometheus_round(tmp, web)))
        plans = [p for p in plans
                 if not ONLY or any(o in f"{p[0]} @ {p[1]}" for o in ONLY.split(","))]
        results: dict[int, list[Round]] = {i: [] for i in range(len(plans))}
        for _ in range(REPEATS):  # interleaved, so a busy minute hits every row alike
            for i, (label, server, run) in enumerate(plans):
                results[i].append(run())
                r = results[i][-1]
                print(f"{label} @ {server}: {len(r.answered)} answered, p99 "
                      f"{_ms(_p(_latencies_ms(r), 0.99))} ms, {dict(r.failed)}, "
                      f"{dict(r.attackers)}", file=sys.stderr, flush=True)
        prom = [i for i, p in enumerate(plans) if p[1].startswith("Prometheus")]
        anchor = _median_p99(results[prom[0]]) if prom else None
        for i, (label, server, _) in enumerate(plans):
            rows.append(_row(label, server, results[i], anchor, i in prom))
    return table(
        f"Basic auth under a distinct-password flood: {ATTACKERS} keep-alive connections, "
        f"a new wrong password per request (bcrypt cost {BCRYPT_COST}), while a scraper with "
        f"the right password asks every {SCRAPE_EVERY_S} s for {FLOOD_S:g} s on one "
        f"keep-alive connection (median of {REPEATS} rounds, a fresh server each; goal: "
        "scrape p99 ≤ 100 ms; a scrape not answered 200 within 10 s counts as ∞)",
        ["flood against", "server", "scrapes answered 200", "scrape median ms",
         "scrape p99 ms", "scrape max ms", "ratio to anchor: median / p99",
         "attacker answers/s 401 / 429 / 503", "attacker connections",
         "server CPU (one core)", "RSS MiB start / peak"],
        rows,
    )


def main() -> None:
    print(bench_auth_flood())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
