"""The daemon keeps a real Alertmanager (Debian's package) in sync with its firing alerts.

Alertmanager runs on its own free port on 127.0.0.1 with a null receiver, its own storage
directory and no cluster listener (shared/notes/real-components.md); what arrived is read
back with ``amtool alert query -o json``.  Processes are stopped by PID.  Conditions are
polled with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RunningDaemon, require_tool
from tests.prometheus_server import free_port

pytestmark = pytest.mark.real

DEADLINE_S = 60.0
ALERTNAME = "CrankshaftActiveConnections"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Alertmanager:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = require_tool("prometheus-alertmanager")
        self.amtool = require_tool("amtool")
        self.dir = workdir / f"alertmanager-{time.monotonic_ns()}"
        self.dir.mkdir()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.dir / "am.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s"},
                    "receivers": [{"name": "null"}],
                }
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Alertmanager:
        with open(self.dir / "alertmanager.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.dir / 'am.yml'}",
                    f"--storage.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",  # keeps it off 0.0.0.0:9094
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, "Alertmanager to become ready", 30)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"alertmanager exited: {self.read_log()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def read_log(self) -> str:
        return (self.dir / "alertmanager.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts, as amtool lists them (resolved ones are not listed)."""
        out = subprocess.run(
            [self.amtool, f"--alertmanager.url={self.url}", "alert", "query", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return json.loads(out) or []

    def crankshaft(self) -> dict[str, dict[str, Any]]:
        """severity -> alert, of the active CrankshaftActiveConnections alerts."""
        return {
            a["labels"]["severity"]: a
            for a in self.alerts()
            if a["labels"].get("alertname") == ALERTNAME
        }


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path)
    yield am
    am.stop()


def write_config(path: Path, am_url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "interval": "1s",
                "target": {"kind": "none"},
                "alerts": [
                    {
                        "metric": "active_connections",
                        "warning": 50,
                        "critical": 100,
                        "description": "Too many active connections",
                    }
                ],
                "notifiers": {
                    "alertmanager": {"url": am_url, "timeout": "2s", "resend_interval": "2s"}
                },
            }
        )
    )
    return path


def push(d: RunningDaemon, connections: int) -> None:
    r = d.post_json("/metrics/record", {"active_connections": connections})
    assert r.status == 200, r.text


def assert_labels(alert: dict[str, Any], severity: str) -> None:
    assert alert["labels"] == {
        "alertname": ALERTNAME,
        "severity": severity,
        "metric": "active_connections",
        "instance": socket.gethostname(),
        "job": "crankshaft-exporter",
    }
    assert alert["annotations"]["summary"] == "Too many active connections"
    assert "active_connections" in alert["annotations"]["description"]
    assert alert["status"]["state"] == "active"


def test_alerts_fire_and_resolve_in_alertmanager(
    daemon_factory: Callable[..., RunningDaemon], alertmanager: Alertmanager, tmp_path: Path
) -> None:
    alertmanager.start()
    d = daemon_factory("--config", str(write_config(tmp_path / "e.yaml", alertmanager.url)))
    push(d, 120)  # above both thresholds: a critical and a warning alert, as Prometheus would
    alerts = wait_for(
        lambda: (a := alertmanager.crankshaft()) and len(a) == 2 and a,
        "both levels in Alertmanager",
    )
    assert_labels(alerts["critical"], "critical")
    assert_labels(alerts["warning"], "warning")
    push(d, 10)
    wait_for(lambda: not alertmanager.crankshaft(), "the alerts to resolve in Alertmanager")
    assert "level=error" not in alertmanager.read_log()


def test_an_alert_fired_while_alertmanager_is_down_arrives_when_it_is_up(
    daemon_factory: Callable[..., RunningDaemon], alertmanager: Alertmanager, tmp_path: Path
) -> None:
    d = daemon_factory("--config", str(write_config(tmp_path / "e.yaml", alertmanager.url)))
    push(d, 60)  # warning only; Alertmanager is not running yet: connection refused
    wait_for(lambda: d.request("/metrics/alerts").json(), "the alert to fire in the daemon")
    wait_for(
        lambda: (
            'crankshaft_notifications_failed_total{notifier="alertmanager"} 0'
            not in d.request("/metrics/prometheus").text
        ),
        "a failed delivery attempt",
    )
    alertmanager.start()
    alerts = wait_for(alertmanager.crankshaft, "the alert to arrive after the outage")
    assert list(alerts) == ["warning"]
    assert_labels(alerts["warning"], "warning")
    push(d, 120)  # escalates: the critical level joins, the warning one stays
    wait_for(
        lambda: set(alertmanager.crankshaft()) == {"warning", "critical"},
        "the critical level to arrive",
    )
    push(d, 10)
    wait_for(lambda: not alertmanager.crankshaft(), "the alerts to resolve")
