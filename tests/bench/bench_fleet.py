"""A fleet on one link: every car offline together for 10 minutes, then back together.

N exporters (``FLEET_CARS`` or ``--cars``, default 50: an idle exporter costs well under 1 %
of a core and ~39 MiB, so two shared cores and a few GB carry 50 beside other work), each
with its own state directory and ``vehicle`` label, collect every 5 s and remote-write
through one proxy (the :class:`RecordingProxy` of the real tests) to one real Prometheus
receiver with an out-of-order window.  The proxy black-holes every request (accepts, never
answers: a dead cellular link) for ``FLEET_OUTAGE_S`` or ``--outage`` (default 600 s), then
forwards again.  Beside them, the anchor: Prometheus in agent mode scraping one more exporter
(with no remote write of its own) every 5 s and remote-writing through the same proxy.

Measured:

- time from the link's return until each car has caught up (its oldest unacknowledged
  sample younger than two intervals), and whether the receiver then holds every
  collection of every car (its raw samples vs the exporter's own collection count, no gap
  longer than 1.5 intervals, none delivered twice according to the proxy);
- what the receiver answered (statuses seen by the proxy, the receiver's own write-handler
  counts) and what the exporters dropped;
- CPU per sample sent (utime + stime from /proc/PID/stat over the whole run, and over the
  catch-up alone, divided by the samples acknowledged), bytes written to disk per hour
  (write_bytes of /proc/PID/io over the run, scaled to an hour), the send log's size at the
  end of the outage, and RSS;
- the same for the agent (its WAL directory in place of the send log).

``python -m tests.bench.bench_fleet --outage 60`` (or ``FLEET_OUTAGE_S=60``) is a quick check.
Everything listens on 127.0.0.1, every process started is stopped by PID at the end (also on
failure or SIGTERM), and every wait has a deadline.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from tests.bench.bench_daemon import cpu_seconds, rss_mib
from tests.bench.bench_http import REPO
from tests.bench.harness import table
from tests.helpers import free_port, stop_process
from tests.remote_write_peers import Receiver, RecordingProxy, SeriesKey

INTERVAL_S = 5.0
WARMUP_S = 30.0  # steady delivery before the outage
CATCH_UP_LIMIT_S = 900.0  # a car not caught up by then counts as not caught up
START_LIMIT_S = 120.0
OOO_WINDOW = "1h"
MAX_SAMPLE_AGE = "30m"  # below the window, as the README says
METRIC = "crankshaft_last_collection_timestamp_seconds"  # one sample per collection
AGENT_CAR = "car-agent"
RW = "crankshaft_remote_write_"


class Tally(list[Any]):
    """Stands in for :attr:`RecordingProxy.acknowledged`: instead of keeping every
    acknowledged request (hundreds of MB for a fleet), counts per (vehicle, timestamp) how
    many acknowledged requests carried a sample of one metric, which is what shows a sample
    delivered twice."""

    def __init__(self, metric: str) -> None:
        super().__init__()
        self.name = ("__name__", metric)
        self.counts: Counter[tuple[str, int]] = Counter()

    def append(self, request: list[tuple[SeriesKey, int]]) -> None:
        for labels, ts in request:
            if self.name in labels:
                self.counts[(dict(labels).get("vehicle", ""), ts)] += 1


def proc_io_write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def http_text(port: int, path: str, timeout: float = 10.0) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def totals(text: str) -> dict[str, float]:
    """Each metric's samples summed over their labels (enough for one-receiver counters)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def labelled(text: str, name: str) -> dict[str, float]:
    """Samples of ``name`` by their label text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


@dataclass
class Proc:
    """One process of the run, with its CPU and disk writes at the marks taken."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path
    cpu: dict[str, float] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    caught_up_after: float | None = None

    def mark(self, at: str, sent: float) -> None:
        self.cpu[at] = cpu_seconds(self.proc.pid)
        self.written[at] = proc_io_write_bytes(self.proc.pid)
        self.sent[at] = sent


class Run:
    """Every process of the run; :meth:`close` stops each by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.receiver: Receiver | None = None
        self.proxy: RecordingProxy | None = None

    def spawn(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kw)
        self.procs.append(proc)
        return proc

    def exporter(self, name: str, remote_write: list[dict[str, Any]]) -> Proc:
        d = self.workdir / name
        (d / "state").mkdir(parents=True)
        doc = {
            "interval": f"{INTERVAL_S:g}s",
            "history": {"state_file": str(d / "state" / "history.bin")},
            "remote_write": remote_write,
            "logging": {"level": "WARNING"},
        }
        (d / "exporter.yaml").write_text(yaml.safe_dump(doc))
        port = free_port()
        proc = self.spawn([sys.executable, "-m", "exporter", "run", "--config",
                           str(d / "exporter.yaml"), "--listen", f"127.0.0.1:{port}"],
                          d / "exporter.log", cwd=REPO)
        return Proc(name, port, proc, d)

    def agent(self, target_port: int, write_url: str) -> Proc:
        d = self.workdir / "agent"
        d.mkdir()
        doc = {
            "global": {"scrape_interval": f"{INTERVAL_S:g}s",
                       "external_labels": {"vehicle": AGENT_CAR}},
            "scrape_configs": [{"job_name": "crankshaft",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
            "remote_write": [{"url": write_url, "name": "central"}],
        }
        (d / "agent.yml").write_text(yaml.safe_dump(doc))
        port = free_port()
        proc = self.spawn(["prometheus", "--enable-feature=agent",
                           f"--config.file={d / 'agent.yml'}",
                           f"--storage.agent.path={d / 'wal'}",
                           f"--web.listen-address=127.0.0.1:{port}"], d / "agent.log")
        return Proc("agent", port, proc, d)

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        if self.proxy is not None:
            self.proxy.close()
        if self.receiver is not None:
            self.receiver.stop()


def wait_until(condition: Callable[[], bool], what: str, limit: float,
               interval: float = 0.5) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit:.0f}s waiting for {what}")
        time.sleep(interval)


def answers(port: int, path: str) -> bool:
    try:
        http_text(port, path, timeout=2)
        return True
    except OSError:
        return False


def car_metrics(car: Proc) -> dict[str, float]:
    return totals(http_text(car.port, "/metrics/prometheus"))


def agent_metrics(agent: Proc) -> dict[str, float]:
    return totals(http_text(agent.port, "/metrics"))


def agent_lag(m: dict[str, float]) -> float:
    """How far the agent's sending is behind what it has scraped, in seconds."""
    return (m.get("prometheus_remote_storage_highest_timestamp_in_seconds", 0.0)
            - m.get("prometheus_remote_storage_queue_highest_sent_timestamp_seconds", 0.0))


def raw_samples(receiver: Receiver, selector: str, at: float | None = None) -> list[int]:
    """Timestamps (ms) of every raw sample of ``selector`` in the last 3 h (before ``at``)."""
    expr = f"{selector}[3h]" + (f" @ {at:.3f}" if at is not None else "")
    return sorted(round(float(t) * 1000) for s in receiver.query(expr) for t, _ in s["values"])


def max_gap_s(stamps: list[int]) -> float:
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0) / 1000.0


def receiver_write_codes(receiver: Receiver) -> Counter[str]:
    with urllib.request.urlopen(receiver.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    codes: Counter[str] = Counter()
    for labels, value in labelled(text, "prometheus_http_requests_total").items():
        if 'handler="/api/v1/write"' in labels:
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            codes[code] += int(value)
    return codes


@dataclass
class CarResult:
    name: str
    recorded: int
    held: int
    max_gap: float
    twice: int
    dropped: float
    missing: list[int]  # positions (0: the first collection after start) never delivered
    pending_at_return: float = 0.0


def check_car(receiver: Receiver, car: Proc, delivered: dict[tuple[str, int], int]) -> CarResult:
    """What the receiver holds of this car against what the car collected (its own history
    of collection times): every collection up to the newest one, read from a scrape that
    shows nothing pending (so the newest is acknowledged too; a new collection waits only
    milliseconds)."""
    m = car_metrics(car)
    deadline = time.monotonic() + 4 * INTERVAL_S
    while m.get(RW + "samples_pending", 0.0) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        m = car_metrics(car)
    newest = m[METRIC]
    stamps = raw_samples(receiver, f'{METRIC}{{vehicle="{car.name}"}}', at=newest + 0.001)
    history = json.loads(http_text(car.port, "/metrics?last_n=100000"))
    recorded = sorted(t for s in history["memory"]["samples"]
                      if (t := int(s["timestamp"])) <= round(newest * 1000))
    held = set(stamps)
    missing = [i for i, t in enumerate(recorded) if t not in held]
    twice = sum(1 for (v, _), n in delivered.items() if v == car.name and n > 1)
    return CarResult(car.name, int(m["crankshaft_collections_total"]), len(stamps),
                     max_gap_s(stamps), twice, m.get(RW + "samples_dropped_total", 0.0), missing)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def fleet(cars_n: int, outage_s: float, workdir: Path) -> str:
    run = Run(workdir)
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        return _measure(run, cars_n, outage_s)
    finally:
        run.close()
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _measure(run: Run, cars_n: int, outage_s: float) -> str:
    receiver = run.receiver = Receiver(run.workdir, ooo_window=OOO_WINDOW).start()
    proxy = run.proxy = RecordingProxy(receiver.write_url)
    tally = Tally(METRIC)
    proxy.acknowledged = tally
    bench_cpu0 = time.process_time()

    cars = []
    for i in range(cars_n):
        name = f"car-{i:02d}"
        cars.append(run.exporter(name, [{
            "url": proxy.url, "name": "central", "labels": {"vehicle": name},
            "instance": name, "max_sample_age": MAX_SAMPLE_AGE,
        }]))
    plain = run.exporter("car-plain", [])
    agent = run.agent(plain.port, proxy.url)
    for p in [*cars, plain]:
        wait_until(partial(answers, p.port, "/metrics/prometheus"), f"{p.name} to answer",
                   START_LIMIT_S)
    wait_until(lambda: answers(agent.port, "/-/ready"), "the agent to be ready", START_LIMIT_S)

    t0 = time.monotonic()
    for p in [*cars, plain]:
        p.mark("start", 0.0)
    agent.mark("start", agent_metrics(agent).get("prometheus_remote_storage_samples_total", 0))
    wait_until(lambda: all(car_metrics(c).get(RW + "samples_sent_total", 0) > 0 for c in cars)
               and agent_metrics(agent).get("prometheus_remote_storage_samples_total", 0) > 0,
               "every car and the agent to deliver", START_LIMIT_S, interval=2)
    time.sleep(WARMUP_S)

    print(f"fleet: {cars_n} cars delivering; link down for {outage_s:.0f}s", file=sys.stderr)
    proxy.blackhole()
    time.sleep(outage_s)
    log_bytes = [dir_bytes(c.dir / "state" / "remote-write") for c in cars]
    wal_bytes = dir_bytes(agent.dir / "wal")
    pending_at_return = [car_metrics(c).get(RW + "samples_pending", 0.0) for c in cars]
    for c in cars:
        c.mark("return", car_metrics(c).get(RW + "samples_sent_total", 0.0))
    agent.mark("return", agent_metrics(agent).get("prometheus_remote_storage_samples_total", 0))

    proxy.restore()
    t_return = time.monotonic()
    print("fleet: link back; waiting for every car to catch up", file=sys.stderr)
    waiting = [*cars, agent]
    while waiting and time.monotonic() - t_return < CATCH_UP_LIMIT_S:
        for p in list(waiting):
            if p is agent:
                m = agent_metrics(agent)
                done = agent_lag(m) <= 2 * INTERVAL_S
                sent = m.get("prometheus_remote_storage_samples_total", 0.0)
            else:
                m = car_metrics(p)
                done = m.get(RW + "oldest_pending_age_seconds", 0.0) <= 2 * INTERVAL_S
                sent = m.get(RW + "samples_sent_total", 0.0)
            if done:
                p.caught_up_after = time.monotonic() - t_return
                p.mark("caught_up", sent)
                waiting.remove(p)
        time.sleep(1.0)

    time.sleep(2 * INTERVAL_S)  # a couple of collections in steady state again
    with proxy._lock:  # the proxy's threads count into it meanwhile
        delivered = dict(tally.counts)
    results = [check_car(receiver, c, delivered) for c in cars]
    for r, pending in zip(results, pending_at_return, strict=True):
        r.pending_at_return = pending
    agent_stamps = raw_samples(receiver, f'up{{vehicle="{AGENT_CAR}"}}')
    agent_twice = sum(1 for (v, _), n in delivered.items() if v == AGENT_CAR and n > 1)
    elapsed = time.monotonic() - t0
    for c in cars:
        c.mark("end", car_metrics(c).get(RW + "samples_sent_total", 0.0))
    plain.mark("end", 0.0)
    am = agent_metrics(agent)
    agent.mark("end", am.get("prometheus_remote_storage_samples_total", 0.0))
    rss = [rss_mib(c.proc.pid) for c in cars]
    agent_rss, plain_rss = rss_mib(agent.proc.pid), rss_mib(plain.proc.pid)
    codes = receiver_write_codes(receiver)
    with proxy._lock:
        statuses = Counter(proxy.statuses)
    bench_cpu = time.process_time() - bench_cpu0

    return report(cars, results, agent, plain, elapsed, outage_s, log_bytes, wal_bytes,
                  agent_stamps, agent_twice, am, rss, agent_rss, plain_rss, codes, statuses,
                  bench_cpu)


def per_sample_us(p: Proc, a: str, b: str) -> float | None:
    if b not in p.cpu or p.sent[b] <= p.sent[a]:
        return None
    return (p.cpu[b] - p.cpu[a]) / (p.sent[b] - p.sent[a]) * 1e6


def per_hour(p: Proc, elapsed: float) -> float:
    return (p.written["end"] - p.written["start"]) / elapsed * 3600


def span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:.0f} s"


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or not b else f"{a / b:.2f}"


def report(cars: list[Proc], results: list[CarResult], agent: Proc, plain: Proc,
           elapsed: float, outage_s: float, log_bytes: list[int], wal_bytes: int,
           agent_stamps: list[int], agent_twice: int, am: dict[str, float], rss: list[float],
           agent_rss: float, plain_rss: float, codes: Counter[str], statuses: Counter[int],
           bench_cpu: float) -> str:
    n = len(cars)
    caught = [c.caught_up_after for c in cars if c.caught_up_after is not None]
    complete = [r for r in results if r.held == r.recorded and not r.missing
                and r.max_gap <= 1.5 * INTERVAL_S and not r.twice]
    missing_at = Counter(i for r in results for i in r.missing)
    missing = sum(max(0, r.recorded - r.held) for r in results)
    twice = sum(r.twice for r in results)
    whole = [x for c in cars if (x := per_sample_us(c, "start", "end")) is not None]
    burst = [x for c in cars if (x := per_sample_us(c, "return", "caught_up")) is not None]
    agent_whole = per_sample_us(agent, "start", "end")
    agent_burst = per_sample_us(agent, "return", "caught_up")
    written = [per_hour(c, elapsed) / 1024 for c in cars]
    agent_written = per_hour(agent, elapsed) / 1024
    plain_written = per_hour(plain, elapsed) / 1024
    agent_caught = agent.caught_up_after is not None and max_gap_s(agent_stamps) <= (
        1.5 * INTERVAL_S)
    bad_status = sum(v for k, v in statuses.items() if not 200 <= k < 300)
    bad_codes = sum(v for k, v in codes.items() if not k.startswith("2"))
    dropped = sum(r.dropped for r in results)
    agent_dropped = am.get("prometheus_remote_storage_samples_dropped_total", 0.0)
    agent_caught_s = agent.caught_up_after
    med_caught = median(caught) if caught else None
    med_whole = median(whole) if whole else None
    med_burst = median(burst) if burst else None
    med_written = median(written)
    rows: list[list[object]] = [
        ["caught up (receiver holds every collection, no gap, none twice)",
         f"{len(complete)}/{n} cars", "", "yes" if agent_caught else "NO", ""],
        ["collections recorded / held by the receiver (all cars)",
         f"{sum(r.recorded for r in results)} / {sum(r.held for r in results)}",
         f"missing {missing}, twice {twice}",
         f"{len(agent_stamps)} scrapes held, gap ≤ {max_gap_s(agent_stamps):.0f} s, "
         f"twice {agent_twice}", ""],
        ["samples pending per car when the link returned",
         f"{median(r.pending_at_return for r in results):,.0f}", "", "", ""],
        ["time from the link's return until caught up", fmt(med_caught, ".1f", " s"),
         f"p90 {statistics.quantiles(caught, n=10)[-1]:.1f} s, slowest {max(caught):.1f} s"
         if len(caught) == n else
         f"{n - len(caught)} cars never ({CATCH_UP_LIMIT_S:.0f} s limit)",
         fmt(agent_caught_s, ".1f", " s"), ratio(med_caught, agent_caught_s)],
        ["CPU per sample sent, whole run (collecting included)", fmt(med_whole, ".1f", " µs"),
         f"{min(whole):.1f}-{max(whole):.1f}" if whole else "",
         fmt(agent_whole, ".1f", " µs"), ratio(med_whole, agent_whole)],
        ["CPU per sample sent while catching up", fmt(med_burst, ".1f", " µs"),
         f"{min(burst):.1f}-{max(burst):.1f}" if burst else "",
         fmt(agent_burst, ".1f", " µs"), ratio(med_burst, agent_burst)],
        ["bytes written to disk per hour (/proc/PID/io write_bytes)",
         f"{med_written:,.0f} KiB", f"{min(written):,.0f}-{max(written):,.0f}; "
         f"exporter without remote write {plain_written:,.0f}",
         f"{agent_written:,.0f} KiB", ratio(med_written, agent_written)],
        [f"send log (agent: WAL) on disk after {span(outage_s)} offline",
         f"{median(log_bytes) / 1024:,.0f} KiB", "", f"{wal_bytes / 1024:,.0f} KiB",
         ratio(median(log_bytes), wal_bytes)],
        ["RSS at the end", f"{median(rss):.1f} MiB",
         f"exporter without remote write {plain_rss:.1f}", f"{agent_rss:.1f} MiB",
         ratio(median(rss), agent_rss)],
        ["samples dropped (too old, refused, queue full)", f"{dropped:.0f}", "",
         f"{agent_dropped:.0f}", ""],
    ]
    status_text = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    code_text = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
    where = ", ".join(f"collection #{i + 1} after start (of {k} car{'s' if k > 1 else ''})"
                      for i, k in sorted(missing_at.items())) or "none"
    notes = (
        f"\nThe link (a proxy that accepts and never answers) was down {outage_s:.0f} s; "
        f"whole run {elapsed / 60:.1f} min, {n} exporters + the agent and the exporter it "
        f"scrapes. Requests answered through the proxy: {status_text} ({bad_status} not 2xx); "
        f"the receiver's write handler: {code_text} ({bad_codes} not 2xx). The bench process "
        f"itself (proxy, decoding every request to find duplicates, polling) used "
        f"{bench_cpu:.1f} s of CPU. Collections the exporters recorded and the receiver "
        f"never got: {where}.\n"
    )
    return table(f"A fleet of {n} cars offline {span(outage_s)} together, then back "
                 "(median per car; anchor: Prometheus agent for one car, same run)",
                 ["what", "exporter, median of cars", "spread", "Prometheus agent",
                  "ratio to agent"], rows) + notes


def main(outage_s: float | None = None, cars: int | None = None) -> None:
    if shutil.which("prometheus") is None:
        print("### Fleet benchmark\n\nskipped: no prometheus binary on PATH\n")
        return
    outage = outage_s if outage_s is not None else float(os.environ.get("FLEET_OUTAGE_S", 600))
    n = cars if cars is not None else int(os.environ.get("FLEET_CARS", 50))
    # /var/tmp: on disk (a tmpfs /tmp would show no write_bytes at all)
    with tempfile.TemporaryDirectory(prefix="crankshaft-fleet-", dir="/var/tmp") as tmp:
        print(fleet(n, outage, Path(tmp)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--outage", type=float, help="seconds offline (default 600)")
    parser.add_argument("--cars", type=int, help="exporters (default 50)")
    args = parser.parse_args()
    main(args.outage, args.cars)
