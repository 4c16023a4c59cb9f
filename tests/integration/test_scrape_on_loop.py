"""A scrape of the exposition is made on the event loop when it needs no waiting, and goes
to a handler thread when it would wait (the recorder's lock taken by a collection or an
ingest batch, a render in progress, a status provider that may wait on file I/O).  Either
way the answer is the same; the loop never waits."""

from __future__ import annotations

import http.client
import threading
from typing import Any

import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App, Request
from exporter.http.connections import Conn
from exporter.rendering import WouldWait
from exporter.snapshot import StatusFamily
from tests.helpers import wait_for

PROMETHEUS = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def request(path: str, accept: str = PROMETHEUS, method: str = "GET", query: str = "",
            encoding: str | None = None) -> Request:
    headers = {"accept": accept}
    if encoding:
        headers["accept-encoding"] = encoding
    return Request(method, path, query, headers, "127.0.0.1")


def without_process(body: bytes) -> list[bytes]:
    """The exposition minus the process_* lines, whose values move between two renders."""
    return [line for line in body.splitlines() if b"process_" not in line]


@pytest.fixture
def app() -> App:
    endpoint = MetricsEndpoint(sources=[])
    endpoint.record_request_latency("/api/x", 12.0)
    endpoint.collect_now()
    return App(endpoint)


@pytest.mark.parametrize(("path", "accept", "content_type"), [
    ("/metrics", PROMETHEUS, "application/openmetrics-text"),
    ("/metrics/prometheus", PROMETHEUS, "application/openmetrics-text"),
    ("/metrics/prometheus", "text/plain;version=0.0.4", "text/plain"),
    ("/metrics", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "text/plain"),
])
def test_a_scrape_answered_now_is_what_a_handler_thread_answers(
    app: App, path: str, accept: str, content_type: str
) -> None:
    now = app.answer_now(request(path, accept))
    threaded = app.handle(request(path, accept))
    assert now is not None
    assert (now.status, now.headers) == (threaded.status, threaded.headers)
    assert now.content_type.startswith(content_type)
    assert now.content_type == threaded.content_type
    assert without_process(now.body) == without_process(threaded.body)
    assert b"crankshaft_request_duration_seconds_bucket" in now.body


def test_gzip_is_honoured_on_the_loop_as_in_a_thread(app: App) -> None:
    now = app.answer_now(request("/metrics/prometheus", encoding="gzip"))
    assert now is not None and now.headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("req", [
    request("/metrics", "application/json"),  # the JSON document: a thread renders it
    request("/metrics", "*/*"),  # curl gets JSON
    request("/metrics/prometheus", query="x=1"),
    request("/metrics/record", method="POST"),
    request("/healthz"),
    request("/no/such/route"),
])
def test_anything_else_goes_to_a_handler_thread(app: App, req: Request) -> None:
    assert app.answer_now(req) is None


def test_a_scrape_that_would_wait_for_the_recorder_goes_to_a_thread(app: App) -> None:
    lock = app.endpoint.recorder.lock
    with lock:  # a collection or an ingest batch holds it
        assert app.answer_now(request("/metrics")) is None
        with pytest.raises(WouldWait):
            app.endpoint.render_exposition(True, wait=False)
    assert app.answer_now(request("/metrics")) is not None


def test_a_status_provider_that_may_wait_on_io_keeps_scrapes_off_the_loop(app: App) -> None:
    def send_log_status() -> list[StatusFamily]:
        return [StatusFamily("crankshaft_test_pending", "gauge", "Pending", [({}, 1.0)])]

    app.endpoint.add_status_provider(send_log_status, may_wait=True)
    assert app.answer_now(request("/metrics")) is None
    assert b"crankshaft_test_pending 1.0" in app.handle(request("/metrics")).body
    app.endpoint.remove_status_provider(send_log_status)
    assert app.answer_now(request("/metrics")) is not None


def test_while_a_scrape_waits_in_a_thread_the_loop_answers_others(app: App,
                                                                   serve_app: Any) -> None:
    """The recorder's lock is held: the scrape is handed to a thread and waits there; the
    server still answers another connection meanwhile, and the scrape once it is free."""
    server = serve_app(app)
    answers: dict[str, int] = {}
    lock = app.endpoint.recorder.lock
    lock.acquire()
    try:
        def scrape() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("GET", "/metrics/prometheus", headers={"Accept": PROMETHEUS})
            answers["scrape"] = conn.getresponse().status

        waiting = threading.Thread(target=scrape)
        waiting.start()
        wait_for(lambda: any(c.phase == Conn.BUSY for c in server._table),
                 "the scrape to be in a handler thread")
        other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        other.request("GET", "/openapi.yaml")
        assert other.getresponse().status == 200
        assert "scrape" not in answers  # still waiting for the lock, in its thread
    finally:
        lock.release()
    waiting.join(30)
    assert answers == {"scrape": 200}
