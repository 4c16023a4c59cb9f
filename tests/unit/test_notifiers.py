"""Notifier delivery with a fake transport and a fake clock: nothing sleeps a retry delay.

The fake clock either jumps forward whenever the worker waits for a retry (``auto``: the
whole backoff schedule runs at once and is read back from the attempt times) or only when
the test advances it (manual: the worker stays parked in its backoff wait).  Conditions on
the worker's thread are awaited with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from exporter.alerts.events import FIRED, RESOLVED, ActiveAlert, AlertEvent
from exporter.config.model import AlertmanagerConfig, NotifiersConfig, WebhookConfig
from exporter.endpoint import MetricsEndpoint
from exporter.notifiers import (
    DROPPED,
    FAILED,
    QUEUE_LENGTH,
    SENT,
    AlertmanagerNotifier,
    WebhookNotifier,
    build_notifiers,
)
from exporter.notifiers.delivery import (
    DeliveryWorker,
    backoff_delay,
    http_post,
    redact_url,
    split_credentials,
)
from tests.helpers import wait_for

DEADLINE_S = 10.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """``wait_for`` with this module's deadline, polling the worker's thread closely."""
    wait_for(condition, what, DEADLINE_S, interval=0.002)


class FakeClock:
    def __init__(self, auto: bool = True) -> None:
        self.now = 0.0
        self.auto = auto
        self.waits: list[float] = []
        self._cond = threading.Condition()

    def monotonic(self) -> float:
        with self._cond:
            return self.now

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        if timeout is None:
            return event.wait()
        with self._cond:
            self.waits.append(timeout)
            deadline = self.now + timeout
            if self.auto:
                if event.is_set():
                    return True
                self.now = max(self.now, deadline)
                return False
            while not event.is_set() and self.now < deadline:
                self._cond.wait(0.002)
            return event.is_set()

    def advance(self, seconds: float) -> None:
        with self._cond:
            self.now += seconds
            self._cond.notify_all()


class FakeTransport:
    """Answers from a script (status codes or exceptions; the last one repeats)."""

    def __init__(self, clock: FakeClock, *script: int | BaseException) -> None:
        self.clock = clock
        self.script = list(script) or [200]
        self.calls: list[tuple[float, Any, dict[str, str], float]] = []
        self.entered = threading.Event()
        self.gate: threading.Event | None = None  # when set to an Event, calls block on it
        self._lock = threading.Lock()

    def __call__(self, url: str, body: bytes, headers: Any, timeout: float) -> int:
        with self._lock:
            self.calls.append((self.clock.monotonic(), json.loads(body), dict(headers), timeout))
            answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def bodies(self) -> list[Any]:
        with self._lock:
            return [c[1] for c in self.calls]

    def times(self) -> list[float]:
        with self._lock:
            return [c[0] for c in self.calls]


def body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def make_worker(clock: FakeClock, transport: FakeTransport, **kw: Any) -> DeliveryWorker:
    return DeliveryWorker(
        "test", "http://receiver.invalid/hook", transport=transport, clock=clock, **kw
    )


def scripted_worker(
    *script: int | BaseException, **kw: Any
) -> tuple[DeliveryWorker, FakeTransport]:
    """A worker (not started) on a fresh auto-advancing clock (``transport.clock``), its
    transport answering ``script``."""
    clock = FakeClock()
    transport = FakeTransport(clock, *script)
    return make_worker(clock, transport, **kw), transport


@pytest.fixture
def workers() -> Any:
    started: list[DeliveryWorker] = []
    yield started
    for w in started:
        w.close(timeout=2)


# --- retries and backoff ----------------------------------------------------------------------


def test_backoff_doubles_from_one_second_and_is_capped_at_a_minute() -> None:
    assert [backoff_delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_retries_follow_the_backoff_schedule_until_max_retries(workers: list) -> None:
    w, transport = scripted_worker(503, max_retries=8, retry_window=3600)
    workers.append(w.start())
    w.submit(body(1))
    wait_until(lambda: w.stats().dropped["retries_exhausted"] == 1, "retries to run out")
    # First attempt, then 8 retries after 1, 2, 4, 8, 16, 32, 60, 60 seconds.
    assert transport.times() == [0, 1, 3, 7, 15, 31, 63, 123, 183]
    st = w.stats()
    assert (st.sent, st.failed, st.queue_length) == (0, 9, 0)


def test_connection_errors_timeouts_and_5xx_are_retried_until_delivered(workers: list) -> None:
    w, transport = scripted_worker(
        503, ConnectionRefusedError(), TimeoutError(), 500, 200, max_retries=5
    )
    workers.append(w.start())
    w.submit(body(1))
    wait_until(lambda: w.stats().sent == 1, "delivery")
    assert transport.times() == [0, 1, 3, 7, 15]
    assert transport.bodies() == [{"n": 1}] * 5
    st = w.stats()
    assert (st.failed, sum(st.dropped.values()), st.queue_length) == (4, 0, 0)


def test_max_retries_zero_means_a_single_attempt(workers: list) -> None:
    w, transport = scripted_worker(503, max_retries=0)
    workers.append(w.start())
    w.submit(body(1))
    wait_until(lambda: w.stats().dropped["retries_exhausted"] == 1, "the drop")
    assert transport.times() == [0]


def test_408_and_429_are_retried(workers: list) -> None:
    w, transport = scripted_worker(408, 429, 204)
    workers.append(w.start())
    w.submit(body(1))
    wait_until(lambda: w.stats().sent == 1, "delivery")
    assert len(transport.calls) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422, 302])
def test_other_4xx_and_3xx_are_permanent_failures(workers: list, status: int) -> None:
    w, transport = scripted_worker(status, 200, max_retries=5)
    workers.append(w.start())
    w.submit(body(1))
    w.submit(body(2))
    wait_until(lambda: w.stats().sent == 1, "the second item")
    assert transport.bodies() == [{"n": 1}, {"n": 2}]  # the first one was never retried
    st = w.stats()
    assert (st.failed, st.dropped["rejected"]) == (1, 1)


def test_a_rejection_is_logged_once_not_per_item(workers: list, caplog: Any) -> None:
    w, _ = scripted_worker(404)
    workers.append(w.start())
    for n in range(5):
        w.submit(body(n))
    wait_until(lambda: w.stats().dropped["rejected"] == 5, "five rejections")
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "rejected" in r.message]
    assert len(warnings) == 1
    assert "HTTP 404" in warnings[0].message


# --- the retry window ---------------------------------------------------------------------


def test_an_item_older_than_the_retry_window_is_dropped(workers: list) -> None:
    w, transport = scripted_worker(503, max_retries=None, retry_window=10)
    workers.append(w.start())
    w.submit(body(1))
    w.submit(body(2))
    wait_until(lambda: w.stats().dropped["expired"] == 2, "both items to expire")
    # Retries at 1, 3, 7; the next (15) would be past the window: given up at 10.  The
    # second item waited 10 s behind the first: stale, dropped without being sent.
    assert transport.times() == [0, 1, 3, 7]
    assert transport.bodies() == [{"n": 1}] * 4
    assert transport.clock.monotonic() == 10
    assert w.stats().queue_length == 0


def test_a_retry_window_of_zero_means_one_attempt(workers: list) -> None:
    w, transport = scripted_worker(503, max_retries=5, retry_window=0)
    workers.append(w.start())
    w.submit(body(1))
    w.submit(body(2))
    wait_until(lambda: w.stats().dropped["expired"] == 2, "both items to be given up")
    assert transport.bodies() == [{"n": 1}, {"n": 2}]


# --- order and the queue bound --------------------------------------------------------------


def test_order_is_preserved_behind_a_retried_head(workers: list) -> None:
    w, transport = scripted_worker(503, 503, ConnectionResetError(), 200)
    for n in range(1, 6):
        w.submit(body(n))
    workers.append(w.start())
    wait_until(lambda: w.stats().sent == 5, "all five")
    delivered = [b["n"] for b in transport.bodies()]
    assert delivered == [1, 1, 1, 1, 2, 3, 4, 5]


def test_a_full_queue_drops_the_oldest_waiting_item(workers: list) -> None:
    w, transport = scripted_worker(200, max_queue=3)
    transport.gate = threading.Event()
    workers.append(w.start())
    w.submit(body(1))
    assert transport.entered.wait(DEADLINE_S)  # item 1 is being sent (and hangs)
    for n in range(2, 7):
        w.submit(body(n))
    st = w.stats()
    assert (st.queue_length, st.dropped["queue_full"]) == (4, 2)  # 3 waiting + 1 in flight
    transport.gate.set()
    wait_until(lambda: w.stats().sent == 4, "the rest")
    assert [b["n"] for b in transport.bodies()] == [1, 4, 5, 6]


def test_submit_never_blocks_while_the_receiver_hangs(workers: list) -> None:
    w, transport = scripted_worker(200, max_queue=100)
    transport.gate = threading.Event()  # the receiver accepts and never answers
    workers.append(w.start())
    try:
        w.submit(body(0))
        assert transport.entered.wait(DEADLINE_S)
        done = threading.Event()

        def flood() -> None:
            for n in range(1, 5001):
                w.submit(body(n))
            done.set()

        threading.Thread(target=flood, daemon=True).start()
        assert done.wait(DEADLINE_S), "submit() blocked behind a hanging receiver"
        st = w.stats()
        assert st.queue_length == 101  # bounded: 100 waiting + the one in flight
        assert st.dropped["queue_full"] == 4900
        # close() does not wait for the hanging request either: it reports it as pending.
        pending = w.close(timeout=0.05)
        assert [json.loads(p.payload)["n"] for p in pending] == [0, *range(4901, 5001)]
        assert w.submit(body(9999)) is False
    finally:
        transport.gate.set()


# --- closing --------------------------------------------------------------------------------


def test_close_reports_what_is_still_pending() -> None:
    clock = FakeClock(auto=False)  # the worker stays parked in its first backoff wait
    transport = FakeTransport(clock, 503)
    w = make_worker(clock, transport)
    w.start()
    for n in (1, 2, 3):
        w.submit(body(n))
    wait_until(lambda: len(clock.waits) >= 1, "the first backoff wait")
    pending = w.close(timeout=DEADLINE_S)
    assert [json.loads(p.payload)["n"] for p in pending] == [1, 2, 3]
    assert pending[0].attempts == 1
    assert w._thread is not None and not w._thread.is_alive()
    assert len(transport.calls) == 1  # closing does not retry


def test_close_delivers_what_is_ready_first() -> None:
    w, transport = scripted_worker(200)
    for n in (1, 2, 3):
        w.submit(body(n))
    w.start()
    assert w.close(timeout=DEADLINE_S) == []
    assert [b["n"] for b in transport.bodies()] == [1, 2, 3]


def test_keyed_submits_stand_for_one_waiting_item(workers: list) -> None:
    w, transport = scripted_worker(200)
    transport.gate = threading.Event()
    renders: list[int] = []

    class State:
        def render(self) -> bytes:
            renders.append(1)
            return body(len(renders))

        def delivered(self) -> None:
            pass

    workers.append(w.start())
    state = State()
    w.submit(state, key="sync")
    assert transport.entered.wait(DEADLINE_S)  # in flight: a new submit queues one more
    for _ in range(10):
        w.submit(state, key="sync")
    assert w.stats().queue_length == 2
    transport.gate.set()
    wait_until(lambda: w.stats().sent == 2, "both syncs")
    assert transport.bodies() == [{"n": 1}, {"n": 2}]  # rendered when sent


# --- webhook --------------------------------------------------------------------------------


def event(kind: str = FIRED, level: str = "CRITICAL", value: float = 120.0) -> AlertEvent:
    return AlertEvent(
        kind=kind,
        metric="active_connections",
        level=level,
        previous_level=None if kind == FIRED else level,
        value=value,
        warning_threshold=50.0,
        critical_threshold=100.0,
        description="Too many active connections",
        timestamp_ms=1_700_000_000_000.0,
    )


def test_webhook_posts_the_event_with_source_instance_and_headers() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, 200)
    config = WebhookConfig(
        url="http://127.0.0.1:1/hook", timeout=2.5, headers=(("Authorization", "Bearer s3cret"),)
    )
    hook = WebhookNotifier(config, instance="carpc", transport=transport, clock=clock).start()
    try:
        hook.on_event(event())
        hook.on_event(event(RESOLVED))
        wait_until(lambda: hook.worker.stats().sent == 2, "both events")
    finally:
        hook.begin_close()
        hook.finish_close(time.monotonic() + DEADLINE_S)
    (_, first, headers, timeout), (_, second, _, _) = transport.calls
    assert first == {**event().to_json(), "source": "crankshaft-exporter", "instance": "carpc"}
    assert second["kind"] == "resolved"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["User-Agent"].startswith("crankshaft-exporter/")
    assert timeout == 2.5


def test_url_credentials_become_basic_auth_and_never_reach_labels_or_logs() -> None:
    assert split_credentials("https://u%40x:p%3Aw@h.example:8443/a?t=1") == (
        "https://h.example:8443/a?t=1",
        "Basic dUB4OnA6dw==",
    )
    assert split_credentials("http://h/x") == ("http://h/x", None)
    assert redact_url("https://u:p@[::1]:9093/hook?token=x#f") == "https://[::1]:9093/hook"


def test_http_post_returns_statuses_and_does_not_follow_redirects() -> None:
    seen: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            code = {"/ok": 200, "/down": 503, "/moved": 302}[self.path]
            self.send_response(code)
            if code == 302:
                self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        headers = {"Content-Type": "application/json"}
        assert http_post(base + "/ok", b"{}", headers, 5) == 200
        assert http_post(base + "/down", b"{}", headers, 5) == 503
        assert http_post(base + "/moved", b"{}", headers, 5) == 302
        assert [p for p, _ in seen] == ["/ok", "/down", "/moved"]  # no GET /ok after 302
    finally:
        server.shutdown()
        server.server_close()


# --- Alertmanager -----------------------------------------------------------------------------


def active(
    level: str,
    value: float = 120.0,
    since_ms: float = 1_700_000_000_000.0,
    metric: str = "active_connections",
    **labels: str,
) -> ActiveAlert:
    return ActiveAlert(
        metric, level, value, 50.0, 100.0, "Too many active connections", since_ms, dict(labels)
    )


class Firing:
    def __init__(self) -> None:
        self.alerts: list[ActiveAlert] = []

    def __call__(self) -> list[ActiveAlert]:
        return list(self.alerts)


def am_notifier(
    firing: Firing, clock: FakeClock, transport: FakeTransport | None = None, **config: Any
) -> tuple[AlertmanagerNotifier, list[float]]:
    wall = [1_700_000_100.0]
    n = AlertmanagerNotifier(
        AlertmanagerConfig(url="http://am.invalid:9093/", **config),
        firing,
        instance="carpc",
        transport=transport or FakeTransport(clock),
        clock=clock,
        wall_clock=lambda: wall[0],
    )
    return n, wall


def test_alertmanager_documents_every_firing_level_like_prometheus() -> None:
    firing, clock = Firing(), FakeClock()
    n, _ = am_notifier(firing, clock, resend_interval=30)
    firing.alerts = [
        active("WARNING"),
        active("CRITICAL"),
        active("WARNING", 812.0, metric="request_latency_p95", endpoint="/api/play"),
    ]
    docs = json.loads(n.render() or b"")
    assert docs[0] == {
        "labels": {
            "alertname": "CrankshaftActiveConnections",
            "severity": "warning",
            "metric": "active_connections",
            "instance": "carpc",
            "job": "crankshaft-exporter",
        },
        "annotations": {
            "summary": "Too many active connections",
            "description": "active_connections on carpc is 120 (warning above 50, "
            "critical above 100).",
        },
        "startsAt": "2023-11-14T22:13:20.000Z",
        "endsAt": "2023-11-14T22:17:00.000Z",  # now + 4 x resend_interval
    }
    assert docs[1]["labels"]["severity"] == "critical"
    assert docs[2]["labels"]["endpoint"] == "/api/play"
    assert docs[2]["labels"]["alertname"] == "CrankshaftRequestLatencyP95"
    assert (
        "request_latency_p95 endpoint=/api/play on carpc is 812 ms"
        in (docs[2]["annotations"]["description"])
    )


def test_alertmanager_sends_nothing_when_nothing_fires() -> None:
    n, _ = am_notifier(Firing(), FakeClock())
    assert n.render() is None


def test_alertmanager_resends_a_resolution_until_delivered() -> None:
    firing, clock = Firing(), FakeClock()
    n, wall = am_notifier(firing, clock)
    firing.alerts = [active("WARNING"), active("CRITICAL")]
    n.observe()
    wall[0] += 60
    firing.alerts = [active("WARNING", 70.0, since_ms=1_700_000_050_000.0)]  # de-escalated
    n.observe()
    for _ in range(2):  # not delivered: the resolution stays in every body
        docs = json.loads(n.render() or b"")
        assert [(d["labels"]["severity"], d["endsAt"]) for d in docs] == [
            ("warning", "2023-11-14T22:20:00.000Z"),
            ("critical", "2023-11-14T22:16:00.000Z"),  # resolved when it was observed
        ]
        assert docs[0]["startsAt"] == "2023-11-14T22:13:20.000Z"  # first seen, kept
    n.delivered()
    docs = json.loads(n.render() or b"")
    assert [d["labels"]["severity"] for d in docs] == ["warning"]
    assert n.pending_resolutions() == 0


def test_alertmanager_resolution_older_than_the_retry_window_is_dropped() -> None:
    firing, clock = Firing(), FakeClock()
    n, _ = am_notifier(firing, clock, retry_window=600)
    firing.alerts = [active("CRITICAL")]
    n.observe()
    firing.alerts = []
    n.observe()
    clock.advance(599)
    assert len(json.loads(n.render() or b"")) == 1
    clock.advance(1)
    assert n.render() is None
    assert n.worker.stats().dropped["expired"] == 1


def test_alertmanager_level_firing_again_cancels_its_pending_resolution() -> None:
    firing, clock = Firing(), FakeClock()
    n, _ = am_notifier(firing, clock)
    firing.alerts = [active("CRITICAL")]
    n.observe()
    firing.alerts = []
    n.observe()
    firing.alerts = [active("CRITICAL", since_ms=1_700_000_090_000.0)]
    docs = json.loads(n.render() or b"")
    assert len(docs) == 1 and docs[0]["endsAt"] > docs[0]["startsAt"]
    assert n.pending_resolutions() == 0


def test_alertmanager_outage_loses_nothing_and_keeps_one_post_pending() -> None:
    firing, clock = Firing(), FakeClock(auto=False)
    transport = FakeTransport(clock, 503, ConnectionRefusedError(), 200)
    n, _ = am_notifier(firing, clock, transport, resend_interval=3600, retry_window=600)
    firing.alerts = [active("WARNING"), active("CRITICAL")]
    n.start()
    try:
        wait_until(lambda: len(transport.calls) == 1, "the first POST")
        firing.alerts = [active("WARNING")]
        for _ in range(50):  # transitions while Alertmanager is down
            n.on_event(event(kind="de-escalated", level="WARNING"))
        assert n.worker.stats().queue_length == 1  # one sync stands for all of them
        clock.advance(1)
        wait_until(lambda: len(transport.calls) == 2, "the first retry")
        clock.advance(2)
        wait_until(lambda: n.worker.stats().sent == 1, "delivery")
    finally:
        n.begin_close()
        n.finish_close(time.monotonic() + DEADLINE_S)
    first, *_, last = transport.bodies()
    assert [d["labels"]["severity"] for d in first] == ["warning", "critical"]
    assert [d["labels"]["severity"] for d in last] == ["warning", "critical"]
    assert last[1]["endsAt"] == "2023-11-14T22:15:00.000Z"  # the critical one: resolved
    assert transport.calls[-1][2]["Content-Type"] == "application/json"
    assert n.pending_resolutions() == 0
    assert n.worker.url == "http://am.invalid:9093/api/v2/alerts"


# --- the set of notifiers on an endpoint ----------------------------------------------------


def families(endpoint: MetricsEndpoint) -> dict[str, list]:
    return {f.name: f.samples for f in endpoint.exposition_snapshot().status}


def test_build_notifiers_subscribes_reports_and_closes() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, 200)
    endpoint = MetricsEndpoint(sources=[])  # manual mode: every record evaluates at once
    config = NotifiersConfig(webhooks=(WebhookConfig(url="http://u:p@127.0.0.1:9/hook?k=1"),))
    notifiers = build_notifiers(config, endpoint, transport=transport, clock=clock)
    try:
        endpoint.record_websocket_connections(120, 200)
        endpoint.record_websocket_connections(10, 200)
        hook = notifiers.webhooks[0]
        wait_until(lambda: hook.worker.stats().sent == 2, "two events")
        assert [(b["kind"], b["level"]) for b in transport.bodies()] == [
            ("fired", "CRITICAL"),
            ("resolved", "CRITICAL"),
        ]
        got = families(endpoint)
        who = {"notifier": "webhook:http://127.0.0.1:9/hook"}
        assert got[SENT] == [(who, 2.0)]
        assert got[FAILED] == [(who, 0.0)]
        assert got[QUEUE_LENGTH] == [(who, 0.0)]
        assert ({**who, "reason": "queue_full"}, 0.0) in got[DROPPED]
        text = endpoint.export_prometheus()
        sample = 'crankshaft_notifications_sent_total{notifier="webhook:http://127.0.0.1:9/hook"}'
        assert f"{sample} 2" in text
        assert "k=1" not in text and "u:p" not in text
    finally:
        notifiers.close(timeout=DEADLINE_S)
    assert SENT not in families(endpoint)
    endpoint.record_websocket_connections(120, 200)  # after close: not delivered anywhere
    assert len(transport.calls) == 2


def test_reconfigure_keeps_unchanged_notifiers_and_replaces_the_rest() -> None:
    clock = FakeClock()
    transport = FakeTransport(clock, 200)
    endpoint = MetricsEndpoint(sources=[])
    a = WebhookConfig(url="http://127.0.0.1:9/a")
    b = WebhookConfig(url="http://127.0.0.1:9/b")
    notifiers = build_notifiers(NotifiersConfig(webhooks=(a, b)), endpoint, transport=transport)
    try:
        kept = notifiers.webhooks[0]
        notifiers.reconfigure(
            NotifiersConfig(
                webhooks=(a, WebhookConfig(url="http://127.0.0.1:9/b", max_retries=1), a),
                alertmanager=AlertmanagerConfig(url="http://127.0.0.1:9"),
            )
        )
        assert notifiers.webhooks[0] is kept
        assert [h.name for h in notifiers.webhooks] == [
            "webhook:http://127.0.0.1:9/a",
            "webhook:http://127.0.0.1:9/b",
            "webhook:http://127.0.0.1:9/a#2",
        ]
        assert notifiers.alertmanager is not None
        names = [s[0]["notifier"] for s in families(endpoint)[SENT]]
        assert names == [*(h.name for h in notifiers.webhooks), "alertmanager"]
        notifiers.reconfigure(NotifiersConfig())
        assert notifiers.all == ()
        assert families(endpoint) == {}
    finally:
        notifiers.close(timeout=DEADLINE_S)
