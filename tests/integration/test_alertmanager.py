"""The daemon keeps a real Alertmanager (Debian's package) in sync with its firing alerts.

Alertmanager runs on its own free port on 127.0.0.1 with a null receiver, its own storage
directory and no cluster listener (shared/notes/real-components.md); what arrived is read
back with ``amtool alert query -o json``.  Processes are stopped by PID.  Conditions are
polled with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (
    RunningDaemon,
    push_connections,
    require_tool,
    write_connection_alert_config,
)
from tests.helpers import LocalServer, wait_for

pytestmark = pytest.mark.real

DEADLINE_S = 60.0
POLL_S = 0.2  # each look at Alertmanager runs amtool
ALERTNAME = "CrankshaftActiveConnections"


class Alertmanager(LocalServer):
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = require_tool("prometheus-alertmanager")
        self.amtool = require_tool("amtool")
        super().__init__("alertmanager", workdir, port)
        (self.dir / "am.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s"},
                    "receivers": [{"name": "null"}],
                }
            )
        )

    def start(self) -> Alertmanager:
        self.launch(
            [
                self.binary,
                f"--config.file={self.dir / 'am.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # keeps it off 0.0.0.0:9094
            ]
        )
        return self

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
    return write_connection_alert_config(
        path, {"alertmanager": {"url": am_url, "timeout": "2s", "resend_interval": "2s"}}
    )


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """``wait_for`` with this module's deadline, at the pace of amtool."""
    return wait_for(condition, what, DEADLINE_S, POLL_S)


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
    # Above both thresholds: a critical and a warning alert, as Prometheus would.
    push_connections(d, 120)
    alerts = wait_until(
        lambda: (a := alertmanager.crankshaft()) and len(a) == 2 and a,
        "both levels in Alertmanager",
    )
    assert_labels(alerts["critical"], "critical")
    assert_labels(alerts["warning"], "warning")
    push_connections(d, 10)
    wait_until(lambda: not alertmanager.crankshaft(), "the alerts to resolve in Alertmanager")
    assert "level=error" not in alertmanager.read_log()


def test_an_alert_fired_while_alertmanager_is_down_arrives_when_it_is_up(
    daemon_factory: Callable[..., RunningDaemon], alertmanager: Alertmanager, tmp_path: Path
) -> None:
    d = daemon_factory("--config", str(write_config(tmp_path / "e.yaml", alertmanager.url)))
    push_connections(d, 60)  # warning only; Alertmanager is not running yet: connection refused
    wait_until(lambda: d.request("/metrics/alerts").json(), "the alert to fire in the daemon")
    wait_until(
        lambda: (
            'crankshaft_notifications_failed_total{notifier="alertmanager"} 0'
            not in d.request("/metrics/prometheus").text
        ),
        "a failed delivery attempt",
    )
    alertmanager.start()
    alerts = wait_until(alertmanager.crankshaft, "the alert to arrive after the outage")
    assert list(alerts) == ["warning"]
    assert_labels(alerts["warning"], "warning")
    push_connections(d, 120)  # escalates: the critical level joins, the warning one stays
    wait_until(
        lambda: set(alertmanager.crankshaft()) == {"warning", "critical"},
        "the critical level to arrive",
    )
    push_connections(d, 10)
    wait_until(lambda: not alertmanager.crankshaft(), "the alerts to resolve")
