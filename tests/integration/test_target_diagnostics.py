"""A typo'd --target on the real daemon explains itself in the log and in /healthz."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import poll


def test_a_typod_target_name_says_what_was_looked_for_and_the_nearest_names(
        daemon_factory, tmp_path: Path) -> None:
    exe = tmp_path / "csheadunitd"
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    target = subprocess.Popen([str(exe), "600"])
    try:
        d = daemon_factory("--interval", "1", "--target", "name:csheadunit")
        r = poll(lambda: d.request("/healthz"),
                 lambda r: r.status == 200 and r.json()["status"] == "degraded",
                 "/healthz to say degraded")
        doc = r.json()
        assert doc["target"] == "name csheadunit"
        assert doc["target_up"] is False
        missing = doc["target_missing"]
        assert missing["looked_for"] == "name csheadunit"
        assert missing["nearest"][0] == "csheadunitd"
        assert missing["processes_seen"] >= 2
        assert doc["reasons"] == [missing["message"]]
        assert "nearest names: csheadunitd" in missing["message"]
        log = d.log()
        assert "target name csheadunit not found: no running process is named 'csheadunit'" in log
        assert "nearest names: csheadunitd" in log
    finally:
        target.kill()
        target.wait()


def test_the_right_name_is_ok(daemon_factory, tmp_path: Path) -> None:
    exe = tmp_path / "csheadunitd"
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    target = subprocess.Popen([str(exe), "600"])
    try:
        d = daemon_factory("--interval", "1", "--target", "name:csheadunitd")
        r = poll(lambda: d.request("/healthz"), lambda r: r.status == 200, "healthy")
        doc = r.json()
        assert (doc["status"], doc["target_up"], doc["target_missing"], doc["reasons"]) == (
            "ok", True, None, [])
        assert "not found" not in d.log()
    finally:
        target.kill()
        target.wait()
