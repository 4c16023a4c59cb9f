"""The daemon's systemd lifecycle, against real subprocesses and a NOTIFY_SOCKET the test binds.

What systemd would see: READY=1 (with STATUS=) only once the port answers and the first
collection ran; WATCHDOG=1 from the collector loop when WATCHDOG_USEC asks for it (and only
if WATCHDOG_PID, when set, is the daemon's); SIGHUP: RELOADING=1 then READY=1, a valid file
applied keeping the history, an invalid one rejected with its file:line and the old config
kept; SIGTERM: STOPPING=1 and exit 0.  Both a filesystem and an abstract socket are tested.

Nothing sleeps a fixed time: datagrams are received with a socket timeout as a deadline, and
HTTP conditions are polled until they hold or a deadline passes.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import REPO, RunningDaemon, launch_daemon
from tests.helpers import poll, wait_for

DEADLINE_S = 30.0
CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
RELOAD_OK = "crankshaft_config_last_reload_successful"


# --- the notify socket ----------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    fields: dict[str, str]
    sender_pid: int | None
    raw: bytes

    def __contains__(self, item: str) -> bool:
        key, _, value = item.partition("=")
        return self.fields.get(key) == value


def parse_notification(raw: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in raw.decode().split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        assert sep, f"sd_notify line without '=': {line!r} in {raw!r}"
        fields[key] = value
    return fields


class NotifySocket:
    """A SOCK_DGRAM unix socket standing in for systemd's notify socket.

    SO_PASSCRED makes the kernel attach each sender's pid, as systemd checks it for
    ``NotifyAccess=main``.
    """

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it: "/path" or "@name"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.received: list[Notification] = []

    def close(self) -> None:
        self.sock.close()

    def _receive(self, timeout: float | None) -> Notification | None:
        """One datagram within ``timeout`` seconds (None: only one already queued)."""
        if timeout is None:
            self.sock.setblocking(False)
        else:
            self.sock.settimeout(max(timeout, 0.001))
        try:
            raw, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDS.size))
        except (TimeoutError, BlockingIOError):
            return None
        pid = None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = CREDS.unpack(data[: CREDS.size])[0]
        note = Notification(parse_notification(raw), pid, raw)
        self.received.append(note)
        return note

    def wait_for(
        self, wanted: Callable[[Notification], bool], what: str, timeout: float = DEADLINE_S
    ) -> Notification:
        """The next datagram for which ``wanted`` holds; every one received is kept."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            note = self._receive(remaining) if remaining > 0 else None
            if note is None:
                got = [n.raw for n in self.received]
                raise AssertionError(f"no {what} within {timeout} s; received {got}")
            if wanted(note):
                return note

    def drain(self) -> list[Notification]:
        """Every datagram already queued, without waiting."""
        notes = []
        while (note := self._receive(None)) is not None:
            notes.append(note)
        return notes


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    if request.param == "path":
        # sun_path holds 108 bytes: a short folder rather than pytest's long tmp_path.
        with tempfile.TemporaryDirectory(prefix="cs-notify-", dir="/tmp") as folder:
            s = NotifySocket(os.path.join(folder, "notify.sock"))
            yield s
            s.close()
    else:
        s = NotifySocket(f"@crankshaft-test-{uuid.uuid4().hex}")
        yield s
        s.close()


# --- the daemon -----------------------------------------------------------------------------


def daemon_env(notify: NotifySocket, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    }
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "NOTIFY_SOCKET": notify.address, **extra}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    """Start ``python -m exporter run`` with exactly the given environment; every daemon
    started is stopped by PID at the end.  ``own_watchdog_pid`` runs it through
    ``sh -c 'WATCHDOG_PID=$$ exec ...'``, as systemd sets it: the daemon's own pid."""
    started: list[RunningDaemon] = []

    def start(*args: str, env: dict[str, str], own_watchdog_pid: bool = False) -> RunningDaemon:
        log_path = tmp_path / f"daemon-{len(started)}.log"
        argv = [
            sys.executable,
            "-m",
            "exporter",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            *args,
        ]
        if own_watchdog_pid:
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *argv]
        d = launch_daemon(argv, log_path, env, DEADLINE_S)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def metrics_json(d: RunningDaemon) -> dict[str, Any]:
    r = d.request("/metrics", headers={"Accept": "application/json"})
    assert r.status == 200, r.body
    doc = r.json()
    assert isinstance(doc, dict)
    return doc


def exposition(d: RunningDaemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics/prometheus (text 0.0.4): (name, sorted labels) -> value."""
    r = d.request("/metrics/prometheus", headers={"Accept": "text/plain;version=0.0.4"})
    assert r.status == 200, r.body
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse_text(r.text)
        for s in family.samples
    }


def threshold(samples: dict, metric: str, level: str) -> float:
    key = (
        "crankshaft_alert_threshold",
        tuple(sorted({"metric": metric, "level": level, "selector": ""}.items())),
    )
    return samples[key]


def is_ready(n: Notification) -> bool:
    return "READY=1" in n


def write_config(path: Path, *, interval: str, warning: int, critical: int = 2048) -> None:
    path.write_text(
        f"interval: {interval}\n"
        "history:\n"
        "  max_samples: 1000\n"
        "target:\n"
        "  kind: self\n"
        "alerts:\n"
        "  - metric: memory_usage\n"
        f"    warning: {warning}\n"
        f"    critical: {critical}\n"
        "    description: Memory usage high\n"
    )


def start_on_config(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket, config: Path, *args: str,
    interval: str,
) -> RunningDaemon:
    """Write ``config`` (memory_usage warning at 1536), start the daemon on it and wait for
    READY=1."""
    write_config(config, interval=interval, warning=1536)
    d = spawn("--config", str(config), *args, env=daemon_env(notify))
    notify.wait_for(is_ready, "READY=1")
    return d


def reload(d: RunningDaemon, notify: NotifySocket, what: str = "READY=1 after the reload"
           ) -> Notification:
    """SIGHUP the daemon, then wait for RELOADING=1 and the READY=1 that ends the reload."""
    os.kill(d.pid, signal.SIGHUP)
    notify.wait_for(lambda n: "RELOADING=1" in n, "RELOADING=1")
    return notify.wait_for(is_ready, what)


def terminate(d: RunningDaemon, notify: NotifySocket) -> Notification:
    """SIGTERM the daemon and wait for its STOPPING=1."""
    os.kill(d.pid, signal.SIGTERM)
    return notify.wait_for(lambda n: "STOPPING=1" in n, "STOPPING=1")


# --- readiness ------------------------------------------------------------------------------


def test_ready_comes_after_the_port_answers_and_the_first_collection(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    # A long interval: the only sample at READY time is the first collection's.
    d = spawn("--interval", "1h", env=daemon_env(notify))
    ready = notify.wait_for(is_ready, "READY=1")
    # The moment READY=1 is received, the port must already answer and hold a sample.
    doc = metrics_json(d)
    assert doc["memory"]["sample_count"] >= 1
    assert doc["is_collecting"] is True

    # The first READY=1 is the first datagram of all and carries the status line.
    first_ready = next(n for n in notify.received if is_ready(n))
    assert first_ready is ready
    assert ready.fields.get("STATUS"), ready.raw
    assert f"127.0.0.1:{d.port}" in ready.fields["STATUS"]
    assert ready.fields.get("MAINPID") == str(d.pid)
    assert ready.sender_pid == d.pid  # NotifyAccess=main would reject anyone else
    assert not any("STOPPING=1" in n or "RELOADING=1" in n for n in notify.received)


def test_sigterm_sends_stopping_and_exits_0(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    d = spawn("--interval", "1h", env=daemon_env(notify))
    notify.wait_for(is_ready, "READY=1")
    stopping = terminate(d, notify)
    assert stopping.sender_pid == d.pid
    assert d.proc.wait(DEADLINE_S) == 0, d.log()
    assert "Traceback" not in d.log()


def test_sigterm_during_startup_still_exits_0(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    """A stop request before READY (systemctl stop while activating) is a clean exit too."""
    d = spawn("--interval", "1h", env=daemon_env(notify))
    os.kill(d.pid, signal.SIGTERM)
    assert d.proc.wait(DEADLINE_S) == 0, d.log()
    notes = notify.drain()
    assert any("STOPPING=1" in n for n in notes), [n.raw for n in notes]
    assert "Traceback" not in d.log()


# --- watchdog -------------------------------------------------------------------------------


def is_watchdog(n: Notification) -> bool:
    return "WATCHDOG=1" in n


def test_watchdog_pings_arrive_repeatedly(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    # The interval (1 h) is far longer than the watchdog period: pings must not wait for it.
    d = spawn("--interval", "1h", env=daemon_env(notify, WATCHDOG_USEC="600000"))
    for _ in range(4):
        ping = notify.wait_for(is_watchdog, "WATCHDOG=1")
        assert ping.sender_pid == d.pid
    assert d.proc.poll() is None


def test_watchdog_pings_when_watchdog_pid_is_the_daemons_own(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    d = spawn(
        "--interval", "1h", env=daemon_env(notify, WATCHDOG_USEC="600000"), own_watchdog_pid=True
    )
    for _ in range(3):
        ping = notify.wait_for(is_watchdog, "WATCHDOG=1")
        assert ping.sender_pid == d.pid


def test_no_watchdog_pings_when_watchdog_pid_is_another_process(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    env = daemon_env(notify, WATCHDOG_USEC="600000", WATCHDOG_PID=str(os.getpid()))
    d = spawn("--interval", "100ms", env=env)
    notify.wait_for(is_ready, "READY=1")
    # Evidence that the collector loop ran for many watchdog periods (0.2 s each): ten more
    # collections at 100 ms.  Had it been pinging, pings would be queued by then.
    start = metrics_json(d)["memory"]["sample_count"]
    wait_for(lambda: metrics_json(d)["memory"]["sample_count"] >= start + 10, "ten collections",
             DEADLINE_S)
    notify.drain()
    assert not any(is_watchdog(n) for n in notify.received), [n.raw for n in notify.received]


# --- reload ---------------------------------------------------------------------------------


def test_sighup_applies_a_valid_config_keeping_history_then_rejects_an_invalid_one(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket, tmp_path: Path
) -> None:
    config = tmp_path / "exporter.yaml"
    d = start_on_config(spawn, notify, config, interval="200ms")
    samples = exposition(d)
    assert samples[(RELOAD_OK, ())] == 1
    assert threshold(samples, "memory_usage", "warning") == 1536
    before = poll(lambda: metrics_json(d), lambda doc: doc["memory"]["sample_count"] >= 3,
                  "3 samples", DEADLINE_S)
    assert before["collection_interval_ms"] == 200
    first_sample = before["memory"]["samples"][0]

    # 1. A valid change: interval and a threshold.
    write_config(config, interval="300ms", warning=1000)
    ready = reload(d, notify)
    assert ready.fields.get("STATUS"), ready.raw
    assert "reload failed" not in ready.fields["STATUS"]
    after = metrics_json(d)
    assert after["collection_interval_ms"] == 300
    assert after["memory"]["sample_count"] >= before["memory"]["sample_count"]
    assert after["memory"]["samples"][0] == first_sample  # the history is the same one
    samples = exposition(d)
    assert threshold(samples, "memory_usage", "warning") == 1000
    assert threshold(samples, "memory_usage", "critical") == 2048
    assert samples[(RELOAD_OK, ())] == 1

    # 2. An invalid file: rejected with its file:line, the running config kept.
    config.write_text(
        "interval: 5s\nalerts:\n  - metric: memory_usage\n    warning: 3000\n    critical: 2048\n"
    )
    count_before_bad = metrics_json(d)["memory"]["sample_count"]
    ready = reload(d, notify, "READY=1 after the rejected reload")
    assert "reload failed" in ready.fields.get("STATUS", ""), ready.raw
    problem = f"{config}:4: alerts[0].warning: 3000 is above critical (2048)"
    wait_for(lambda: problem in d.log(), "the problem in the log", DEADLINE_S)
    assert "Traceback" not in d.log()
    samples = exposition(d)
    assert samples[(RELOAD_OK, ())] == 0
    assert threshold(samples, "memory_usage", "warning") == 1000  # the old rules stay
    doc = metrics_json(d)
    assert doc["collection_interval_ms"] == 300  # not the bad file's 5 s
    assert doc["memory"]["sample_count"] >= count_before_bad
    assert d.proc.poll() is None
    # still collecting on the old interval
    wait_for(
        lambda: metrics_json(d)["memory"]["sample_count"] >= count_before_bad + 2,
        "collections after the rejected reload",
        DEADLINE_S,
    )

    # 3. A valid file again: accepted, the reload gauge back to 1.
    write_config(config, interval="300ms", warning=1200)
    ready = reload(d, notify, "READY=1 after the fixed reload")
    assert "reload failed" not in ready.fields.get("STATUS", "")
    samples = exposition(d)
    assert samples[(RELOAD_OK, ())] == 1
    assert threshold(samples, "memory_usage", "warning") == 1200
    assert metrics_json(d)["memory"]["samples"][0] == first_sample

    # Order of everything systemd saw: READY, then (RELOADING, READY) three times.
    kinds = [k for n in notify.received for k in ("READY", "RELOADING") if f"{k}=1" in n]
    assert kinds == ["READY"] + ["RELOADING", "READY"] * 3

    terminate(d, notify)
    assert d.proc.wait(DEADLINE_S) == 0


def test_exposition_stays_valid_after_reloads(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket, tmp_path: Path
) -> None:
    d = start_on_config(spawn, notify, tmp_path / "exporter.yaml", interval="1h")
    for i in range(2):
        reload(d, notify, f"READY=1 after reload {i + 1}")
    text = d.request("/metrics/prometheus", headers={"Accept": "text/plain;version=0.0.4"}).text
    for family in (RELOAD_OK, "crankshaft_config_last_reload_success_timestamp_seconds"):
        assert text.count(f"# TYPE {family} ") == 1, text
    accept = {"Accept": "application/openmetrics-text;version=1.0.0"}
    om = d.request("/metrics/prometheus", headers=accept).text
    names = [f.name for f in parse_openmetrics(om)]  # raises on a clashing family
    assert len(names) == len(set(names))


def test_sighup_with_a_deleted_config_keeps_serving(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket, tmp_path: Path
) -> None:
    config = tmp_path / "exporter.yaml"
    d = start_on_config(spawn, notify, config, interval="200ms")
    config.unlink()
    os.kill(d.pid, signal.SIGHUP)
    ready = notify.wait_for(is_ready, "READY=1 after the rejected reload")
    assert "reload failed" in ready.fields.get("STATUS", "")
    wait_for(lambda: f"{config}: cannot read" in d.log(), "the problem in the log", DEADLINE_S)
    assert exposition(d)[(RELOAD_OK, ())] == 0
    assert metrics_json(d)["collection_interval_ms"] == 200


def test_reload_keeps_command_line_overrides(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket, tmp_path: Path
) -> None:
    """--interval on the command line wins over the file at start and on every reload."""
    config = tmp_path / "exporter.yaml"
    d = start_on_config(spawn, notify, config, "--interval", "250ms", interval="200ms")
    assert metrics_json(d)["collection_interval_ms"] == 250
    write_config(config, interval="300ms", warning=1000)
    reload(d, notify)
    assert metrics_json(d)["collection_interval_ms"] == 250
    assert threshold(exposition(d), "memory_usage", "warning") == 1000


def test_status_lines_are_one_datagram_of_key_value_lines(
    spawn: Callable[..., RunningDaemon], notify: NotifySocket
) -> None:
    d = spawn("--interval", "1h", env=daemon_env(notify))
    notify.wait_for(is_ready, "READY=1")
    terminate(d, notify)
    d.proc.wait(DEADLINE_S)
    for n in notify.received:
        assert n.raw == "\n".join(f"{k}={v}" for k, v in n.fields.items()).encode()
        assert n.sender_pid == d.pid
