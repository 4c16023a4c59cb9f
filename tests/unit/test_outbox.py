"""Notifications that outlive an outage and a restart: the outbox file, the webhook and the
Alertmanager notifier keeping what they have not delivered, and unreachable receivers not
using up ``max_retries``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.config.model import WebhookConfig
from exporter.notifiers.outbox import Outbox
from exporter.notifiers.webhook import WebhookNotifier
from tests.unit.test_notifiers import (
    FakeClock,
    FakeTransport,
    Firing,
    active,
    am_notifier,
    body,
    event,
    scripted_worker,
    wait_until,
)


@pytest.fixture
def workers() -> Any:
    started: list = []
    yield started
    for w in started:
        w.close(timeout=2)


def test_the_outbox_keeps_items_in_order_across_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "n" / "hook.json")
    box = Outbox(path)
    a, b, c = box.add({"n": 1}), box.add({"n": 2}), box.add({"n": 3})
    box.done([b])
    again = Outbox(path)
    assert [doc for _, doc in again.items()] == [{"n": 1}, {"n": 3}]
    assert len(box) == 2 and a != c
    again.discard()
    assert not Path(path).exists() and len(again) == 0


def test_a_bad_outbox_file_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "hook.json"
    path.write_text("{not json")
    box = Outbox(str(path))
    assert box.items() == []
    assert (tmp_path / "hook.json.bad").read_text() == "{not json"
    box.add({"n": 1})
    assert json.loads(path.read_text())["items"] == [{"n": 1}]


def test_unreachable_attempts_do_not_use_up_max_retries(workers: list) -> None:
    w, transport = scripted_worker(ConnectionRefusedError(), ConnectionRefusedError(),
                                   TimeoutError(), 200, max_retries=1, retry_window=3600)
    workers.append(w.start())
    w.submit(body(1))
    wait_until(lambda: w.stats().sent == 1, "delivery after the outage")
    assert len(transport.calls) == 4 and sum(w.stats().dropped.values()) == 0


def test_webhook_events_wait_in_the_outbox_until_delivered(tmp_path: Path) -> None:
    clock = FakeClock(auto=False)  # time stands still: no retry window runs out meanwhile
    path = str(tmp_path / "hook.json")
    down = FakeTransport(clock, ConnectionRefusedError())
    hook = WebhookNotifier(WebhookConfig(url="http://hook.invalid/"), instance="car",
                           transport=down, clock=clock, outbox=Outbox(path))
    hook.start()
    hook.on_event(event(level="CRITICAL"))
    hook.on_event(event(kind="resolved", level="CRITICAL"))
    wait_until(lambda: len(down.calls) >= 1, "a failed attempt")
    hook.worker.close(timeout=1)  # the exporter stops (or is killed) while offline
    assert len(Outbox(path)) == 2
    up = FakeTransport(clock, 200)
    again = WebhookNotifier(WebhookConfig(url="http://hook.invalid/"), instance="car",
                            transport=up, clock=clock, outbox=Outbox(path))
    again.start()
    try:
        wait_until(lambda: len(up.calls) == 2, "both events after the restart")
        wait_until(lambda: len(Outbox(path)) == 0, "the outbox to empty")
    finally:
        again.worker.close(timeout=1)
    assert [b["kind"] for b in up.bodies()] == ["fired", "resolved"]


def test_alertmanager_resolutions_survive_a_restart(tmp_path: Path) -> None:
    firing, clock = Firing(), FakeClock()
    path = str(tmp_path / "am.json")
    n, _ = am_notifier(firing, clock, FakeTransport(clock, ConnectionRefusedError()))
    n.outbox = Outbox(path)
    firing.alerts = [active("CRITICAL")]
    n.observe()
    firing.alerts = []
    n.observe()  # resolved while Alertmanager cannot be reached
    assert len(Outbox(path)) == 1
    restarted, _ = am_notifier(Firing(), clock)
    again = type(restarted)(restarted.config, Firing(), instance="carpc",
                            transport=FakeTransport(clock), clock=clock, outbox=Outbox(path))
    docs = json.loads(again.render() or b"")
    assert [(d["labels"]["alertname"], d["labels"]["severity"]) for d in docs] == [
        ("CrankshaftActiveConnections", "critical")]
    again.delivered()
    assert len(Outbox(path)) == 0 and again.pending_resolutions() == 0
