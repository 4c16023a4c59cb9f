"""Why a target is not found: what was looked for, how many processes were seen, the
nearest names; and how /healthz reports it (degraded, still 200)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App, HttpSettings, Request
from exporter.sources.process import ProcessSource
from exporter.sources.targets import (
    NameFinder,
    PidfileFinder,
    PidFinder,
    ProcessFinder,
    SystemdUnitFinder,
    TargetMiss,
    nearest_names,
)


def test_nearest_names_finds_the_typo_and_not_the_unrelated() -> None:
    names = ["headunit-svc", "headunit", "sshd", "systemd", "headunit"]
    assert nearest_names("headunit-sm", names) == ("headunit-svc", "headunit")
    assert nearest_names("zzz", names) == ()


def test_miss_text_says_what_how_many_and_the_nearest() -> None:
    miss = TargetMiss("name headunit-sm", 213, "no running process is named 'headunit-sm'",
                      ("headunit-svc",))
    assert miss.text() == ("target name headunit-sm not found: no running process is named "
                           "'headunit-sm' (213 processes seen); nearest names: headunit-svc")
    assert miss.as_json()["nearest"] == ["headunit-svc"]
    assert "nearest" not in TargetMiss("pid 5", 3, "gone").text()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pid_finder_explains_the_missing_pid() -> None:
    pid = dead_pid()
    miss = PidFinder(pid).explain()
    assert miss.looked_for == f"pid {pid}"
    assert f"no running process has pid {pid}" in miss.detail
    assert miss.processes_seen > 1


def test_pidfile_finder_explains_each_way_it_can_miss(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pid"
    assert "cannot read" in PidfileFinder(missing).explain().detail
    garbage = tmp_path / "garbage.pid"
    garbage.write_text("hello\n")
    assert "holds no pid" in PidfileFinder(garbage).explain().detail
    stale = tmp_path / "stale.pid"
    pid = dead_pid()
    stale.write_text(f"{pid}\n")
    assert PidfileFinder(stale).explain().detail == f"pid {pid} from {stale} is not running"


def test_name_finder_suggests_a_running_process_by_its_name(tmp_path: Path) -> None:
    exe = tmp_path / "csheadunitd"
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    proc = subprocess.Popen([str(exe), "600"])
    try:
        finder = NameFinder("csheadunit")
        assert finder.find() == []
        miss = finder.explain()
        assert miss.nearest[0] == "csheadunitd"
        assert miss.processes_seen >= 2
        assert "no running process is named 'csheadunit'" in miss.detail
        assert NameFinder("csheadunitd").find() == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


def test_unit_finder_suggests_units_that_exist(tmp_path: Path) -> None:
    unit = tmp_path / "system.slice" / "headunit.service"
    unit.mkdir(parents=True)
    (unit / "cgroup.procs").write_text("")
    miss = SystemdUnitFinder("headunit-sm", tmp_path).explain()
    assert "no cgroup named headunit-sm.service" in miss.detail
    assert miss.nearest == ("headunit.service",)
    empty = SystemdUnitFinder("headunit", tmp_path)
    assert empty.find() == []
    assert "holds no process" in empty.explain().detail
    nowhere = SystemdUnitFinder("x", tmp_path / "absent").explain()
    assert "no cgroup tree" in nowhere.detail


class Vanishing(ProcessFinder):
    """A target that is there until told otherwise."""

    def __init__(self) -> None:
        self.pids = [os.getpid()]

    def find(self) -> list[int]:
        return list(self.pids)

    def describe(self) -> str:
        return "name vanishing"

    def explain(self) -> TargetMiss:
        return TargetMiss("name vanishing", 7, "no running process is named 'vanishing'",
                          ("vanished",))


def healthz(endpoint: MetricsEndpoint) -> tuple[int, Mapping[str, object]]:
    app = App(endpoint, HttpSettings(target="name vanishing"))
    r = app.handle(Request("GET", "/healthz", "", {}, "127.0.0.1"))
    return r.status, json.loads(r.body)


def test_healthz_is_degraded_with_the_reason_while_the_target_is_missing(caplog) -> None:
    caplog.set_level(logging.INFO)
    finder = Vanishing()
    source = ProcessSource(finder)
    endpoint = MetricsEndpoint(sources=[source])
    endpoint.start_collection(3_600_000)
    try:
        endpoint.collect_now()
        status, doc = healthz(endpoint)
        assert (status, doc["status"], doc["reasons"], doc["target_missing"]) == (
            200, "ok", [], None)
        finder.pids = []
        endpoint.collect_now()
        status, doc = healthz(endpoint)
        assert status == 200  # a liveness probe must not restart the exporter for this
        assert doc["status"] == "degraded"
        assert doc["target_up"] is False
        assert doc["target"] == "name vanishing"
        assert doc["reasons"] == [source.target_miss().text()]
        assert doc["target_missing"]["nearest"] == ["vanished"]
        assert doc["target_missing"]["processes_seen"] == 7
        endpoint.collect_now()  # still missing: said once in the log, not every tick
        said = [r for r in caplog.records if "not found" in r.getMessage()]
        assert len(said) == 1 and "nearest names: vanished" in said[0].getMessage()
        finder.pids = [os.getpid()]
        endpoint.collect_now()
        assert healthz(endpoint)[1]["status"] == "ok"
        assert any("found again" in r.getMessage() for r in caplog.records)
    finally:
        endpoint.stop_collection()


def test_healthz_without_a_watched_target_has_nothing_to_miss() -> None:
    endpoint = MetricsEndpoint(sources=[])
    endpoint.start_collection(3_600_000)
    try:
        endpoint.collect_now()
        status, doc = healthz(endpoint)
        assert (status, doc["status"], doc["target_up"], doc["target_missing"]) == (
            200, "ok", None, None)
    finally:
        endpoint.stop_collection()
