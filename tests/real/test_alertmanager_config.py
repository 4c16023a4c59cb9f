"""config/alertmanager.yml, the example Alertmanager configuration, against a real Alertmanager.

``amtool check-config`` accepts it; a real Alertmanager (Debian's package, own port on
127.0.0.1, no cluster listener) started with it and fed, through its API, a warning and a
critical of the same alert for one head unit mutes the warning (inhibited by the critical),
while the same warning of another head unit, and a critical's warning of another endpoint,
stay active; the routing tree sends each severity to its receiver (``amtool config routes
test``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_tool
from tests.helpers import wait_for
from tests.integration.test_alertmanager import Alertmanager

pytestmark = pytest.mark.real

CONFIG = REPO / "config" / "alertmanager.yml"


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_amtool_check_config_is_clean() -> None:
    amtool = require_tool("amtool")
    r = run([amtool, "check-config", str(CONFIG)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "1 inhibit rules" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=CrankshaftMemoryUsage", "severity=critical"], "crankshaft-critical"),
        (["alertname=CrankshaftMemoryUsage", "severity=warning"], "crankshaft-warning"),
        (["alertname=CrankshaftExporterDown", "severity=warning"], "crankshaft-warning"),
        (["alertname=CrankshaftVehicleSilent", "severity=info"], "crankshaft-info"),
        (["alertname=CrankshaftVehicleExporterDown", "severity=critical"], "crankshaft-critical"),
        (["alertname=SomethingElse"], "crankshaft-warning"),
    ],
)
def test_routing_by_severity(labels: list[str], receiver: str) -> None:
    amtool = require_tool("amtool")
    r = run([amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        url + "/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def states(url: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(instance, severity, endpoint) -> status of every alert Alertmanager holds."""
    with urllib.request.urlopen(url + "/api/v2/alerts", timeout=10) as response:
        alerts = json.loads(response.read())
    return {
        (a["labels"]["instance"], a["labels"]["severity"], a["labels"].get("endpoint", "")):
            a["status"]
        for a in alerts
    }


def alert(instance: str, severity: str, name: str = "CrankshaftMemoryUsage",
          **extra: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "job": "crankshaft",
                   "instance": instance, "metric": "memory_usage", **extra},
        "annotations": {"summary": f"{severity} on {instance}"},
    }


def test_a_critical_inhibits_the_warning_of_the_same_alert_and_head_unit(tmp_path: Path) -> None:
    am = Alertmanager(tmp_path)
    shutil.copyfile(CONFIG, am.dir / "am.yml")  # the shipped file, not the test's own
    assert yaml.safe_load((am.dir / "am.yml").read_text())["inhibit_rules"]
    am.start()
    try:
        p95 = "CrankshaftRequestLatencyP95"
        post_alerts(am.url, [
            alert("car-a:9001", "warning"),
            alert("car-a:9001", "critical"),
            alert("car-b:9001", "warning"),  # another car: not muted by car A's critical
            alert("car-a:9001", "critical", p95, endpoint="/api/play"),
            alert("car-a:9001", "warning", p95, endpoint="/api/settings"),  # other endpoint
        ])
        expected = {
            ("car-a:9001", "warning", ""): "suppressed",
            ("car-a:9001", "critical", ""): "active",
            ("car-b:9001", "warning", ""): "active",
            ("car-a:9001", "critical", "/api/play"): "active",
            ("car-a:9001", "warning", "/api/settings"): "active",
        }

        def settled() -> dict | None:
            now = states(am.url)
            got = {k: v["state"] for k, v in now.items()}
            return now if got == expected else None

        now = wait_for(settled, f"alert states {expected}", 60, interval=0.2)
        assert now[("car-a:9001", "warning", "")]["inhibitedBy"], now
        assert not now[("car-b:9001", "warning", "")]["inhibitedBy"], now
        # amtool, as a user would look: the muted warning is listed only with --inhibited
        listed = json.loads(run([am.amtool, f"--alertmanager.url={am.url}", "alert", "query",
                                 "-o", "json", "alertname=CrankshaftMemoryUsage"]).stdout)
        assert sorted((a["labels"]["instance"], a["labels"]["severity"]) for a in listed) == [
            ("car-a:9001", "critical"), ("car-b:9001", "warning")]
    finally:
        am.stop()
