"""Streamed bodies through the asyncio server: what a broken download looks like to the
client, what a client that stops reading costs the daemon, and the history route's limit.

The server is the real one on a loopback port; the routes are small fakes whose streams
fail, never end, or render slowly on purpose.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.http.app import MAX_STREAMS, App, HttpSettings, Request, Response
from exporter.http.server import ExporterServer
from tests.helpers import poll
from tests.stand_in_app import StandInApp


class StreamApp(StandInApp):
    """Answers every request with the stream ``make()`` returns."""

    def __init__(self, make, settings: HttpSettings | None = None) -> None:
        self.make = make
        self.settings = settings or HttpSettings()
        self.closed = threading.Event()

    def handle(self, request: Request) -> Response:
        return Response(200, b"", "text/plain", stream=self.make(self), on_close=self.closed.set)


def read_all(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the server sends, and whether the connection ended in a reset."""
    data = b""
    sock.settimeout(30)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, False
        data += chunk


def failing(app: StreamApp) -> Iterator[bytes]:
    yield b"# TYPE a gauge\na 1 1\n"
    raise RuntimeError("rendering failed on purpose")


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_a_stream_that_fails_to_render_resets_the_connection(serve_app, version, caplog):
    """On HTTP/1.0 a close would read as the end of a complete body: a reset says broken."""
    server = serve_app(StreamApp(failing))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"GET /metrics/history {version}\r\nHost: x\r\n\r\n".encode())
        data, reset = read_all(sock)
    assert reset, data
    assert b"0\r\n\r\n" not in data  # never the last chunk of a complete body
    assert "rendering a streamed response failed" in caplog.text
    assert server.app.closed.is_set()


def endless(app: StreamApp) -> Iterator[bytes]:
    while True:
        yield b"x" * 65536


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_client_that_reads_nothing_is_cut_and_its_descriptor_freed(serve_app):
    app = StreamApp(endless, HttpSettings(request_timeout_s=1.0))
    server = serve_app(app)
    before = open_fds()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /metrics/history HTTP/1.1\r\nHost: x\r\n\r\n")
    poll(lambda: app.closed.is_set(), bool, "the stream to be given up")
    # The server's end of the connection is gone: one descriptor (our own socket) more
    # than before, not two; a graceful close would wait forever for us to read.
    poll(open_fds, lambda n: n == before + 1, "the server's descriptor to be closed")
    assert server.connection_count() == 0
    _, reset = read_all(sock)
    assert reset
    sock.close()


def slow(app: StreamApp) -> Iterator[bytes]:
    try:
        for _ in range(20):
            time.sleep(0.3)
            yield b"x" * 1000
    finally:
        app.generator_closed = True


def test_stopping_while_a_batch_renders_closes_the_stream_without_an_error(caplog):
    caplog.set_level(logging.INFO)
    app = StreamApp(slow)
    app.generator_closed = False
    server = ExporterServer("127.0.0.1", 0, app)
    server.start()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # the first batch is rendering (it waits 0.3 s a piece)
        server.stop()
    poll(lambda: app.closed.is_set(), bool, "the stream's slot to be given back")
    assert app.generator_closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_an_http_1_0_stream_says_close_only(serve_app):
    server = serve_app(StreamApp(lambda app: iter([b"a 1\n", b"# EOF\n"])))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data, reset = read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert not reset and body == b"a 1\n# EOF\n"
    connection = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"connection:")]
    assert connection == [b"Connection: close"]


def history_request(method: str = "GET") -> Request:
    return Request(method=method, path="/metrics/history", query="", headers={},
                   client_ip="127.0.0.1", body=b"")


def test_history_downloads_beyond_the_limit_get_503_until_one_is_closed():
    endpoint = MetricsEndpoint(sources=[], rules=[])
    endpoint.collect_now()
    app = App(endpoint)
    try:
        running = [app.handle(history_request()) for _ in range(MAX_STREAMS)]
        assert [r.status for r in running] == [200] * MAX_STREAMS
        refused = app.handle(history_request())
        assert refused.status == 503 and refused.headers["Retry-After"] == "10"
        assert b"history downloads are running" in refused.body
        head = app.handle(history_request("HEAD"))  # headers only: takes no slot, no copy
        assert head.status == 200 and head.on_close is None
        running[0].on_close()  # the server does this when a download ends, sent or not
        again = app.handle(history_request())
        assert again.status == 200
        assert b"".join(again.stream).endswith(b"# EOF\n")
    finally:
        endpoint.close()
