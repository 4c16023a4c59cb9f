"""Shared fixtures: the real daemon as a subprocess on a free loopback port, and the rule for
real-component tests (skip when a tool is missing, fail instead under REQUIRE_REAL=1)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Sleeper, stop_process

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\S+) port (\d+)")


@pytest.fixture
def sleepers() -> Iterator[list[Sleeper]]:
    """Sleeping child processes a test starts (it appends them), stopped after it."""
    started: list[Sleeper] = []
    yield started
    for s in started:
        s.stop()


def require(condition: bool, why: str) -> None:
    """Skip a real-component test whose tool is missing; under REQUIRE_REAL=1 (CI) fail."""
    if condition:
        return
    if os.environ.get("REQUIRE_REAL") == "1":
        pytest.fail(f"REQUIRE_REAL=1 but {why}")
    pytest.skip(why)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    return path  # type: ignore[return-value]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class RunningDaemon:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> Response:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())

    def post_json(self, path: str, doc: object, headers: dict[str, str] | None = None) -> Response:
        return self.request(path, "POST", json.dumps(doc).encode(),
                            {"Content-Type": "application/json", **(headers or {})})

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM by PID, then wait; SIGKILL only if it does not end in time."""
        return stop_process(self.proc, timeout)


def start_daemon(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 30) -> RunningDaemon:
    """Start ``crankshaft-exporter run`` on 127.0.0.1, port chosen by the kernel, and wait
    for its "listening on" log line (an event, not a sleep)."""
    argv = [sys.executable, "-m", "exporter", "run", "--listen", "127.0.0.1:0", *args]
    return launch_daemon(argv, tmp_path / f"daemon-{time.monotonic_ns()}.log",
                         {**os.environ, **(env or {})}, timeout)


def launch_daemon(argv: list[str], log_path: Path, env: dict[str, str],
                  timeout: float = 30) -> RunningDaemon:
    """Run the daemon's ``argv`` in exactly ``env``, its output in ``log_path``, and wait for
    its "listening on" log line."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    deadline = time.monotonic() + timeout
    while True:
        match = LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return RunningDaemon(proc, match.group(1), int(match.group(2)), log_path, argv)
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}: {log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"daemon did not start: {log_path.read_text()}")
        time.sleep(0.02)


def write_connection_alert_config(path: Path, notifiers: dict[str, Any]) -> Path:
    """A config collecting every second from no target, with the seed's active_connections
    alert (warning 50, critical 100) and these notifiers."""
    config = {
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
        "notifiers": notifiers,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def push_connections(d: RunningDaemon, connections: int) -> None:
    r = d.post_json("/metrics/record", {"active_connections": connections})
    assert r.status == 200, r.text


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator:
    started: list[RunningDaemon] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> RunningDaemon:
        d = start_daemon(tmp_path, *args, env=env)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.stop()


@pytest.fixture
def daemon(daemon_factory) -> RunningDaemon:
    """The daemon on built-in defaults, collecting every second."""
    return daemon_factory("--interval", "1")


@pytest.fixture(autouse=True, scope="session")
def _timestamps_compare_correctly() -> Iterator[None]:
    """The tests read OpenMetrics back with prometheus_client's own parser, the reference.
    Older releases (Debian 12's 0.16, the floor run) compare its ``Timestamp`` as ``sec >
    other.sec or nsec > other.nsec``, so 1.950 then 2.037 "went backwards within a group" and
    valid history text is refused.  Only the tests' parser compares timestamps (the exporter
    never does): under such a release they get the comparison newer ones have."""
    from prometheus_client.samples import Timestamp

    if not Timestamp(1, 900_000_000) > Timestamp(2, 0):
        yield
        return
    mp = pytest.MonkeyPatch()
    mp.setattr(Timestamp, "__gt__",
               lambda a, b: a.nsec > b.nsec if a.sec == b.sec else a.sec > b.sec)
    mp.setattr(Timestamp, "__lt__",
               lambda a, b: a.nsec < b.nsec if a.sec == b.sec else a.sec < b.sec)
    yield
    mp.undo()


@pytest.fixture
def serve_app() -> Iterator:
    """``serve_app(app, web=None)``: an in-process ExporterServer for ``app`` on a free
    127.0.0.1 port, stopped after the test."""
    from exporter.http.server import ExporterServer

    servers: list[ExporterServer] = []

    def start(app: Any, web: Any = None) -> ExporterServer:
        server = ExporterServer("127.0.0.1", 0, app, web)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
