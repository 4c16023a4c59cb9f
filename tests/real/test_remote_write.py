"""Remote write against a real Prometheus receiver (Debian's 2.42), across outages and restarts.

The exporter collects every second and writes through a recording proxy to the receiver.
Outages are made both ways a car meets them (the receiver stopped; a link that accepts and
never answers), with the exporter restarted in the middle of each (SIGTERM, then kill -9).
Afterwards every collection is at the receiver exactly once with its own timestamp.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RunningDaemon, require_tool, start_daemon
from tests.helpers import poll, wait_for
from tests.remote_write_peers import Receiver, RecordingProxy
from tests.tlsfiles import CA, bcrypt_hash, write_web_config

pytestmark = pytest.mark.real

CAR = {"vehicle": "car-17"}
TIMESTAMP = "crankshaft_last_collection_timestamp_seconds"
MEMORY = "crankshaft_memory_usage_mb"


@pytest.fixture(autouse=True)
def _prometheus() -> None:
    require_tool("prometheus")


def exporter_config(tmp_path: Path, url: str, **entry: Any) -> Path:
    remote = {
        "url": url,
        "name": "central",
        "labels": CAR,
        "instance": "car-17",
        "remote_timeout": "2s",
        "queue_config": {"min_backoff": "100ms", "max_backoff": "1s",
                         "max_samples_per_send": 200},
        **entry,
    }
    doc = {
        "interval": "1s",
        "history": {"state_file": str(tmp_path / "state" / "history.bin"),
                    "snapshot_interval": "1s"},
        "remote_write": [remote],
    }
    path = tmp_path / "exporter.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def values(d: RunningDaemon, name: str) -> dict[str, float]:
    """Samples of ``name`` in the exporter's text exposition, by label text."""
    out = {}
    for line in d.request("/metrics/prometheus").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


def total(d: RunningDaemon, name: str) -> float:
    return sum(values(d, name).values())


def collections(d: RunningDaemon) -> float:
    return total(d, "crankshaft_collections_total")


def wait_collections(d: RunningDaemon, more: int) -> None:
    start = collections(d)
    poll(lambda: collections(d), lambda n: n >= start + more, f"{more} more collections", 60)


def wait_delivered(d: RunningDaemon) -> None:
    """Until the exporter has nothing pending and has sent since it started."""
    poll(lambda: (total(d, "crankshaft_remote_write_samples_pending"),
                  total(d, "crankshaft_remote_write_samples_sent_total")),
         lambda v: v[0] == 0 and v[1] > 0, "every pending sample delivered", 90)


def recorded_timestamps(d: RunningDaemon) -> set[int]:
    doc = d.request("/metrics?last_n=100000").json()
    return {int(s["timestamp"]) for s in doc["memory"]["samples"]}


def test_every_collection_arrives_once_across_outages_and_restarts(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path, ooo_window="30m").start()
    proxy = RecordingProxy(receiver.write_url)
    config = exporter_config(tmp_path, proxy.url)
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        wait_for(lambda: receiver.query(f'{MEMORY}{{vehicle="car-17"}}'), "first samples", 60)

        # Outage 1: the receiver is down; the exporter is stopped and started meanwhile.
        receiver.stop()
        wait_collections(d, 3)
        assert total(d, "crankshaft_remote_write_samples_pending") > 0
        assert d.stop() == 0
        d = start_daemon(tmp_path, "--config", str(config))
        wait_collections(d, 3)
        receiver.start()
        wait_delivered(d)

        # Outage 2: the link accepts and never answers; the exporter is killed meanwhile.
        proxy.blackhole()
        wait_collections(d, 4)
        killed_at = time.time()
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait()
        d = start_daemon(tmp_path, "--config", str(config))
        wait_collections(d, 3)
        proxy.restore()
        wait_delivered(d)
        recorded = recorded_timestamps(d)
        dropped = values(d, "crankshaft_remote_write_samples_dropped_total")
    finally:
        d.stop()
        proxy.close()
    try:
        stamps = receiver.samples(f'{TIMESTAMP}{{vehicle="car-17"}}')
        memory = receiver.samples(f'{MEMORY}{{vehicle="car-17"}}')
    finally:
        receiver.stop()

    assert list(stamps) == [(("__name__", TIMESTAMP), ("instance", "car-17"),
                             ("job", "crankshaft"), ("vehicle", "car-17"))]
    (ticks,) = stamps.values()
    # Each collection carries its own time: the sample's timestamp is the value it reports.
    assert all(ts == round(v * 1000) for ts, v in ticks)
    collected = {ts for ts, _ in ticks}
    (memory_samples,) = memory.values()
    assert {ts for ts, _ in memory_samples} == collected
    # Everything the exporter recorded arrived; what arrived and the exporter's history no
    # longer holds is what kill -9 took from the history before its next snapshot.
    assert recorded <= collected, (sorted(recorded - collected)[:10], proxy.statuses)
    lost_by_kill = collected - recorded
    assert all(killed_at * 1000 - 3000 <= ts <= killed_at * 1000 for ts in lost_by_kill), \
        sorted(lost_by_kill)
    # Never the same sample twice on the wire, nothing dropped.
    sent = proxy.delivered(MEMORY)
    assert sent and max(sent.values()) == 1, [k for k, n in sent.items() if n > 1][:5]
    assert {ts for (_, ts) in sent} == collected
    assert all(v == 0 for v in dropped.values()), dropped


def _outage_then_fleet_moves_on(tmp_path: Path, receiver: Receiver, future_s: float,
                                seconds: int) -> tuple[RunningDaemon, RecordingProxy, float]:
    """The car goes dark for ``seconds`` while the rest of the fleet keeps the receiver's
    head moving; returns the exporter still running, its proxy and when the link came back."""
    proxy = RecordingProxy(receiver.write_url)
    d = start_daemon(tmp_path, "--config", str(exporter_config(tmp_path, proxy.url)))
    wait_for(lambda: receiver.query(f'{MEMORY}{{vehicle="car-17"}}'), "first samples", 60)
    proxy.blackhole()
    wait_collections(d, seconds)
    back = time.time()
    other_car = {"__name__": "fleet_clock", "vehicle": "car-99"}
    assert receiver.push(other_car, int((back + future_s) * 1000), 1.0) == 204
    proxy.restore()
    return d, proxy, back


@pytest.mark.parametrize(
    ("ooo_window", "blocks", "future_s", "status"),
    [
        # No out-of-order window (2 m blocks: "an hour behind" is a minute behind): 400.
        (None, "2m", 45.0, 400),
        # A 10 s window on 2.42: what is neither in order nor in the window is answered
        # 500 "too old" (a sender that retries 5xx forever stops delivering anything).
        ("10s", "2m", 45.0, 500),
    ],
    ids=["no-ooo-window-400", "ooo-window-500-too-old"],
)
def test_refusals_are_counted_and_never_jam_delivery(
    tmp_path: Path, ooo_window: str | None, blocks: str | None, future_s: float, status: int
) -> None:
    receiver = Receiver(tmp_path, ooo_window=ooo_window, block_duration=blocks).start()
    d, proxy, back = _outage_then_fleet_moves_on(tmp_path, receiver, future_s, 20)
    try:
        wait_delivered(d)
        # Fresh collections keep arriving after the refusals.
        wait_for(lambda: [s for s in receiver.samples(f'{MEMORY}{{vehicle="car-17"}}')
                          .get(_key(MEMORY), []) if s[0] > (back + 2) * 1000],
                 "fresh samples after the refusals", 60)
        dropped = values(d, "crankshaft_remote_write_samples_dropped_total")
    finally:
        d.stop()
        proxy.close()
        receiver.stop()
    refused = sum(v for k, v in dropped.items() if 'reason="refused"' in k)
    assert refused > 0, dropped
    assert proxy.statuses[status] > 0, proxy.statuses
    assert sum(v for k, v in dropped.items() if 'reason="refused"' not in k) == 0, dropped


def _key(name: str) -> tuple[tuple[str, str], ...]:
    return (("__name__", name), ("instance", "car-17"), ("job", "crankshaft"),
            ("vehicle", "car-17"))


def test_tls_and_basic_auth_to_the_receiver(tmp_path: Path) -> None:
    ca = CA(tmp_path / "ca")
    server = ca.issue("receiver")
    web = write_web_config(tmp_path / "web.yml", {
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key)},
        "basic_auth_users": {"car17": bcrypt_hash("s3cret", cost=10)},
    })
    (tmp_path / "password").write_text("s3cret\n")
    receiver = Receiver(tmp_path, ooo_window="30m", web_config=web).start()
    config = exporter_config(tmp_path, receiver.write_url,
                             tls_config={"ca_file": str(ca.cert)},
                             basic_auth={"username": "car17",
                                         "password_file": str(tmp_path / "password")})
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        wait_delivered(d)
        wait_collections(d, 2)
        wait_delivered(d)
        sent = total(d, "crankshaft_remote_write_samples_sent_total")
        dropped = total(d, "crankshaft_remote_write_samples_dropped_total")
        failed = total(d, "crankshaft_remote_write_samples_failed_total")
    finally:
        d.stop()
        receiver.stop()
    assert sent > 0 and dropped == 0 and failed == 0
