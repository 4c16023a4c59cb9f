"""Webhook delivery from the real daemon to a receiver that is down, then back.

The receiver is a local ``http.server`` on 127.0.0.1.  While it is down (first nothing
listens on its port: connections are refused; then it answers 503) the daemon goes through
several alert transitions; once it answers 200 it must receive every one of them exactly
once, in order.  Each push is followed by polling ``/metrics/alerts`` until the daemon has
evaluated it, so no two pushes fall into one collection tick; nothing sleeps a fixed time.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningDaemon, push_connections, write_connection_alert_config
from tests.helpers import free_port, wait_for

DEADLINE_S = 120.0  # a retry may be up to 15-30 s away when the receiver comes back
SENT = "crankshaft_notifications_sent"
FAILED = "crankshaft_notifications_failed"
QUEUE = "crankshaft_notifications_queue_length"


class Receiver:
    """An HTTP receiver on a fixed port: ``start()`` it answering ``status``; ``status``
    can be changed while it runs.  Only 2xx-answered POSTs are recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status = 503
        self.received: dict[str, list[tuple[dict[str, str], Any]]] = {}
        self.refused = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, status: int) -> None:
        self.status = status
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.status
                    if 200 <= status < 300:
                        receiver.received.setdefault(self.path, []).append(
                            ({k.lower(): v for k, v in self.headers.items()}, json.loads(body))
                        )
                    else:
                        receiver.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def set_status(self, status: int) -> None:
        with self._lock:
            self.status = status

    def events(self, path: str = "/hook") -> list[Any]:
        with self._lock:
            return [doc for _, doc in self.received.get(path, [])]

    def headers(self, path: str = "/hook") -> list[dict[str, str]]:
        with self._lock:
            return [h for h, _ in self.received.get(path, [])]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receiver() -> Any:
    r = Receiver(free_port())
    yield r
    r.stop()


def write_config(path: Path, hooks: list[dict[str, Any]]) -> Path:
    return write_connection_alert_config(path, {"webhooks": hooks})


def hook(url: str) -> dict[str, Any]:
    return {
        "url": url,
        "timeout": "1s",
        "max_retries": 20,
        "retry_window": "5m",
        "headers": {"X-Crankshaft-Test": "yes"},
    }


def levels(d: RunningDaemon) -> list[str]:
    alerts = d.request("/metrics/alerts").json()
    assert isinstance(alerts, list)
    return [a["level"] for a in alerts if a["metric"] == "active_connections"]


def push(d: RunningDaemon, connections: int, expect: list[str]) -> None:
    """Record a value and wait until the daemon's alert state shows it was evaluated."""
    push_connections(d, connections)
    wait_for(lambda: levels(d) == expect, f"alert levels {expect} after {connections}", 30)


def samples(d: RunningDaemon, family: str) -> dict[str, float]:
    """notifier label -> value of one notification self-metric family."""
    text = d.request("/metrics/prometheus").text
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for s in fam.samples:
                if not s.name.endswith("_created"):
                    out[s.labels["notifier"]] = s.value
    return out


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["kind"], event["level"], event["previous_level"], event["value"])


TRANSITIONS = [  # value pushed, alert levels after it, the event it causes
    (120, ["CRITICAL"], ("fired", "CRITICAL", None, 120.0)),
    (10, [], ("resolved", "CRITICAL", "CRITICAL", 10.0)),
    (60, ["WARNING"], ("fired", "WARNING", None, 60.0)),
    (120, ["CRITICAL"], ("escalated", "CRITICAL", "WARNING", 120.0)),
    (60, ["WARNING"], ("de-escalated", "WARNING", "CRITICAL", 60.0)),
    (10, [], ("resolved", "WARNING", "WARNING", 10.0)),
]


def test_events_queued_while_the_receiver_is_down_arrive_once_in_order(
    daemon_factory: Callable[..., RunningDaemon], receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "exporter.yaml", [hook(receiver.url + "/hook")])
    d = daemon_factory("--config", str(config))
    name = f"webhook:{receiver.url}/hook"
    # Down, first with nothing listening (connection refused) ...
    for value, expect, _ in TRANSITIONS[:3]:
        push(d, value, expect)
    # ... then answering 503.
    receiver.start(503)
    for value, expect, _ in TRANSITIONS[3:]:
        push(d, value, expect)
    assert samples(d, SENT)[name] == 0
    assert samples(d, QUEUE)[name] >= 1
    receiver.set_status(200)
    wait_for(lambda: len(receiver.events()) >= len(TRANSITIONS), "every event to arrive",
             DEADLINE_S)
    # Once the queue is empty, nothing more can come: compare the exact list.
    wait_for(lambda: samples(d, QUEUE)[name] == 0, "the daemon's queue to drain", 30)
    events = receiver.events()
    assert [summary(e) for e in events] == [t[2] for t in TRANSITIONS]
    assert samples(d, SENT)[name] == len(TRANSITIONS)
    assert samples(d, FAILED)[name] >= 1
    for e in events:
        assert e["metric"] == "active_connections"
        assert e["source"] == "crankshaft-exporter"
        assert e["instance"] and isinstance(e["instance"], str)
        assert (e["warning_threshold"], e["critical_threshold"]) == (50.0, 100.0)
        assert e["description"] == "Too many active connections"
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps)
    for h in receiver.headers():
        assert h["content-type"] == "application/json"
        assert h["x-crankshaft-test"] == "yes"


def test_reload_keeps_the_pending_events_of_an_unchanged_webhook(
    daemon_factory: Callable[..., RunningDaemon], receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "exporter.yaml", [hook(receiver.url + "/hook")])
    d = daemon_factory("--config", str(config))
    receiver.start(503)
    for value, expect, _ in TRANSITIONS[:2]:
        push(d, value, expect)
    # Reload adding a second webhook: the first keeps running, its queue intact.
    write_config(config, [hook(receiver.url + "/hook"), hook(receiver.url + "/other")])
    os.kill(d.pid, signal.SIGHUP)
    second = f"webhook:{receiver.url}/other"
    wait_for(lambda: second in samples(d, QUEUE), "the reload to add the second webhook", 30)
    for value, expect, _ in TRANSITIONS[2:4]:
        push(d, value, expect)
    receiver.set_status(200)
    wait_for(lambda: len(receiver.events()) >= 4, "every event on the first webhook", DEADLINE_S)
    wait_for(lambda: len(receiver.events("/other")) >= 2, "the new events on the second",
             DEADLINE_S)
    wait_for(lambda: set(samples(d, QUEUE).values()) == {0}, "both queues to drain", 30)
    assert [summary(e) for e in receiver.events()] == [t[2] for t in TRANSITIONS[:4]]
    assert [summary(e) for e in receiver.events("/other")] == [t[2] for t in TRANSITIONS[2:4]]


def test_events_of_an_outage_survive_sigterm_and_kill_9(
    daemon_factory: Callable[..., RunningDaemon], receiver: Receiver, tmp_path: Path
) -> None:
    """A car out of coverage restarts (ignition) with alerts undelivered: they arrive once
    the receiver is reachable, once each, in order, with the time they happened."""
    config = write_config(tmp_path / "exporter.yaml", [hook(receiver.url + "/hook")])
    doc = yaml.safe_load(config.read_text())
    doc["history"] = {"state_file": str(tmp_path / "state" / "history.bin")}
    config.write_text(yaml.safe_dump(doc))
    d = daemon_factory("--config", str(config))
    for value, expect, _ in TRANSITIONS[:3]:
        push(d, value, expect)
    assert d.stop() == 0
    d = daemon_factory("--config", str(config))  # alert state starts afresh after a restart
    after_restart = [
        (120, ["CRITICAL"], ("fired", "CRITICAL", None, 120.0)),
        (60, ["WARNING"], ("de-escalated", "WARNING", "CRITICAL", 60.0)),
        (10, [], ("resolved", "WARNING", "WARNING", 10.0)),
    ]
    for value, expect, _ in after_restart:
        push(d, value, expect)
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait()
    restarted_ms = time.time() * 1000
    d = daemon_factory("--config", str(config))
    name = f"webhook:{receiver.url}/hook"
    receiver.start(200)
    expected = [t[2] for t in TRANSITIONS[:3] + after_restart]
    wait_for(lambda: len(receiver.events()) >= len(expected), "every event to arrive",
             DEADLINE_S)
    wait_for(lambda: samples(d, QUEUE)[name] == 0, "the daemon's queue to drain", 30)
    events = receiver.events()
    assert [summary(e) for e in events] == expected
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps) and timestamps[-1] < restarted_ms
    assert not list((tmp_path / "state" / "notifications").glob("*.json.bad"))
