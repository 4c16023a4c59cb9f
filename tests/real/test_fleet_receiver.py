"""The shipped receiver configuration (config/prometheus-receiver.yml) with a real Prometheus.

- ``promtool check config`` accepts it with the rules file beside it, as installed.
- A real Prometheus started with it and ``--web.enable-remote-write-receiver`` stores what
  cars remote-write (tests/remote_write.py builds the requests as the exporter's sender
  does: job, instance, vehicle, no ``up``), including a backlog an hour and a half old (its
  out-of-order window), and refuses a sample older than the window.
- Late samples do not page retroactively: a car that comes back after an outage and sends
  an hour of samples with its target down and its memory over the critical threshold gets
  no alert, not even a pending one, while a car sending the same values now does (its
  alerts go pending at the first evaluation, joined with the thresholds it publishes).

The test's copy of the configuration evaluates every second (the shipped 15 s would make the
test wait) and has no ``alerting`` block (nothing must reach an Alertmanager on this
machine's 9093); everything else is the shipped file.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from exporter.config.model import RemoteWriteConfig
from tests.conftest import REPO, require_tool
from tests.prometheus_server import PrometheusServer
from tests.real.test_alert_rules import output, run
from tests.remote_write import push

pytestmark = pytest.mark.real

RECEIVER = REPO / "config" / "prometheus-receiver.yml"
RULES = REPO / "config" / "crankshaft-exporter.rules.yml"
JOB = "crankshaft"
WINDOW_S = 2 * 3600  # the shipped out_of_order_time_window
MAX_SAMPLE_AGE_S = RemoteWriteConfig(url="http://x").max_sample_age  # the default


def car(name: str) -> dict[str, str]:
    return {"job": JOB, "instance": f"{name}.fleet", "vehicle": name}


def collections(labels: dict[str, str], start_ms: int, minutes: int, memory: float,
                target_up: float) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """What a car's exporter records once a minute from ``start_ms`` for ``minutes``
    minutes, as its sender puts it into a remote-write request."""
    times = [start_ms + i * 60_000 for i in range(minutes)]

    def series(name: str, value: float, **extra: str):
        return ({"__name__": name, **labels, **extra}, [(t, value) for t in times])

    out = [
        ({"__name__": "crankshaft_last_collection_timestamp_seconds", **labels},
         [(t, t / 1000) for t in times]),
        series("crankshaft_exporter_build_info", 1, version="1.0"),
        series("crankshaft_memory_usage_mb", memory),
        series("crankshaft_target_up", target_up),
    ]
    for metric, levels in (("memory_usage", {"warning": 1536, "critical": 2048}),
                           ("target_down", {"critical": 0})):
        for level, v in levels.items():
            for family in ("crankshaft_alert_threshold", "crankshaft_alert_clear_threshold"):
                out.append(series(family, v, metric=metric, level=level, selector=""))
    return out


def installed(tmp_path: Path) -> Path:
    """/etc/prometheus as README installs it: the receiver config and the rules beside it."""
    etc = tmp_path / "etc-prometheus"
    etc.mkdir()
    shutil.copy(RECEIVER, etc / "prometheus.yml")
    shutil.copy(RULES, etc / "crankshaft-exporter.rules.yml")
    return etc


def test_receiver_config_passes_promtool_check(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    etc = installed(tmp_path)
    proc = run([promtool, "check", "config", str(etc / "prometheus.yml")], tmp_path)
    assert proc.returncode == 0, output(proc)
    text = proc.stdout + proc.stderr
    assert "SUCCESS: 1 rule files found" in text, output(proc)
    config = yaml.safe_load(RECEIVER.read_text())
    assert config["storage"]["tsdb"]["out_of_order_time_window"] == "2h"
    assert MAX_SAMPLE_AGE_S < WINDOW_S  # the relation the file's comments explain
    assert "--web.enable-remote-write-receiver" in RECEIVER.read_text()


def test_receiver_stores_remote_writes_and_late_samples_do_not_page(tmp_path: Path) -> None:
    require_tool("prometheus")
    etc = installed(tmp_path)
    config = yaml.safe_load((etc / "prometheus.yml").read_text())
    config.pop("alerting")
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(etc / "crankshaft-exporter.rules.yml")]
    now_ms = int(time.time() * 1000)
    with PrometheusServer(tmp_path, [], config=config,
                          flags=("--web.enable-remote-write-receiver",)) as prom:
        # car-17 reports now: target down, memory over critical (one collection)
        fresh = collections(car("car-17"), now_ms, 1, memory=3000, target_up=0)
        # car-18 is back after an outage: 30 collections from 90 to 61 minutes ago, the
        # same values, sent now (inside the 2h window, older than the 5 minute lookback)
        late = collections(car("car-18"), now_ms - 90 * 60_000, 30, memory=3000, target_up=0)
        status, body = push(prom.write_url, late + fresh)
        assert status == 204, (status, body)

        # stored with their own timestamps, every one
        stored = prom.query('count_over_time(crankshaft_target_up{vehicle="car-18"}[2h])')
        assert [float(s["value"][1]) for s in stored] == [30.0]
        assert not prom.query('up{job="crankshaft"}')  # remote-written: no up

        # The positive control: the reporting car's alerts go pending (target down, 2m;
        # memory over the threshold it publishes, 5m) at the first evaluation that saw the
        # request, which saw the late car's samples too.
        pending = prom.wait_for_query(
            'ALERTS{vehicle="car-17",alertname="CrankshaftTargetDown",alertstate="pending"}')
        assert pending[0]["metric"]["instance"] == "car-17.fleet"
        prom.wait_for_query('ALERTS{vehicle="car-17",alertname="CrankshaftMemoryUsage",'
                            'severity="critical"}')
        # ... and the late car has none, pending or firing, from any rule
        assert prom.query('ALERTS{vehicle="car-18"}') == []
        assert prom.query('ALERTS_FOR_STATE{vehicle="car-18"}') == []
        assert prom.query('crankshaft_target_up{vehicle="car-18"}') == []  # not in the lookback

        # A sample older than the window is refused: 500 "too old" on 2.39-2.49, 400 from
        # 2.50 on.  The exporter's max_sample_age keeps it from ever being sent.
        too_old = collections(car("car-18"), now_ms - WINDOW_S * 1000 - 10 * 60_000, 1,
                              memory=1, target_up=1)
        status, body = push(prom.write_url, too_old)
        assert status in (400, 500) and "too old" in body, (status, body)
        stored = prom.query('count_over_time(crankshaft_memory_usage_mb{vehicle="car-18"}[3h])')
        assert [float(s["value"][1]) for s in stored] == [30.0]
