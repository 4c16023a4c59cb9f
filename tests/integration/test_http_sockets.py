"""The server's own sockets, read in-process: TCP_NODELAY on every accepted connection
(plain and TLS), and how a TLS connection ends after ``Connection: close``."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.http import connection
from exporter.http.app import HttpSettings, Request, Response
from exporter.http.connections import Conn
from exporter.http.server import ExporterServer
from exporter.http.webconfig import load_web_config
from exporter.http.webwatch import WebConfigWatcher
from tests.helpers import read_until_closed, wait_for
from tests.stand_in_app import StandInApp
from tests.tlsfiles import CA, client_context, write_web_config


class HelloApp(StandInApp):
    settings = HttpSettings()

    def handle(self, request: Request) -> Response:
        return Response(200, b"hello\n", "text/plain")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def serve(serve_app: Any) -> Any:
    """``serve(web=None)``: the hello app behind an in-process server."""
    return lambda web=None: serve_app(HelloApp(), web)


def tls_watcher(ca: CA, tmp_path: Path) -> WebConfigWatcher:
    pair = ca.issue("server")
    path = write_web_config(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(pair.cert), "key_file": str(pair.key)}})
    return WebConfigWatcher(load_web_config(path))


def server_side_nodelay(server: ExporterServer) -> list[int]:
    """TCP_NODELAY of each connection the server holds, read off its own sockets."""
    conns: list[Conn] = list(server._table)
    return [c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                            socket.TCP_NODELAY)
            for c in conns]


def test_plain_connections_have_tcp_nodelay(serve) -> None:
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        values = wait_for(lambda: server_side_nodelay(server), "the connection in the table")
    assert values == [1]


def test_tls_connections_have_tcp_nodelay(serve, ca: CA, tmp_path: Path) -> None:
    server = serve(tls_watcher(ca, tmp_path))
    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
        values = wait_for(lambda: server_side_nodelay(server), "the connection in the table")
    assert values == [1]


def test_tls_connection_close_ends_without_lingering(serve, ca: CA, tmp_path: Path,
                                                     monkeypatch) -> None:
    """A client that reads to the end after ``Connection: close`` gets the end once the
    answer is sent.  The linger and the delivery check's polling are made an hour long
    here: had the server waited for the client to close first (as it must on an error with
    unread input), or for the client's ACK of the answer (which a client may delay), this
    client's read would time out instead of ending."""
    monkeypatch.setattr(connection, "LINGER_S", 3600.0)
    monkeypatch.setattr(connection, "DELIVERY_POLL_S", 3600.0)
    server = serve(tls_watcher(ca, tmp_path))
    ctx = client_context(ca)
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            try:
                while chunk := tls.recv(65536):
                    received += chunk
            except TimeoutError:
                pytest.fail(f"the server kept the TLS connection open; got {received[:200]!r}")
            except ssl.SSLError as e:  # a close without close_notify would show here
                pytest.fail(f"the TLS connection ended without close_notify: {e}")
        assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"hello\n")


def _server_transports(server: ExporterServer) -> list[object]:
    return [c.transport for c in server._table]


def test_a_tls_connection_has_no_tls_layer_until_its_client_speaks(serve, ca: CA,
                                                                   tmp_path: Path) -> None:
    """asyncio's TLS layer costs ~300 KiB a connection; a client that only connected gets
    none, and one that then shakes hands is served as usual."""
    server = serve(tls_watcher(ca, tmp_path))
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as raw:
        transports = wait_for(lambda: _server_transports(server), "the connection")
        assert transports[0].get_extra_info("sslcontext") is None  # type: ignore[attr-defined]
        with client_context(ca).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
            transports = _server_transports(server)
            assert transports[0].get_extra_info("sslcontext") is not None  # type: ignore[attr-defined]


def client_hello(ca: CA) -> bytes:
    """The first flight a TLS client sends (its ClientHello), made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.fixture
def hour_long_requests() -> Iterator[None]:
    """Only the handshake's deadline counts."""
    HelloApp.settings = HttpSettings(request_timeout_s=3600.0)
    yield
    HelloApp.settings = HttpSettings()


def test_a_handshake_that_stalls_is_cut_at_its_own_deadline(serve, ca: CA, tmp_path: Path,
                                                            monkeypatch,
                                                            hour_long_requests) -> None:
    monkeypatch.setattr(connection, "HANDSHAKE_TIMEOUT_S", 0.5)
    server = serve(tls_watcher(ca, tmp_path))
    hello = client_hello(ca)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(hello[: len(hello) // 2])
        try:
            assert sock.recv(65536) == b"", "the server answered half a ClientHello"
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("the stalled handshake was never cut")


def test_half_a_client_hello_then_the_end_is_closed_at_once(serve, ca: CA, tmp_path: Path,
                                                            monkeypatch,
                                                            hour_long_requests) -> None:
    """The end after half a ClientHello: the connection goes now, not at the handshake's
    deadline (made an hour here), and the server does not spin on the readable socket."""
    monkeypatch.setattr(connection, "HANDSHAKE_TIMEOUT_S", 3600.0)
    server = serve(tls_watcher(ca, tmp_path))
    hello = client_hello(ca)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(hello[: len(hello) // 2])
        wait_for(lambda: server._table and all(c.phase == Conn.READING
                                               for c in server._table),
                 "the first bytes seen")
        sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: server.connection_count() == 0, "the connection closed")


class BigApp(StandInApp):
    """A 256 KiB answer: the kernel takes all of it from the server even when the client
    reads nothing, so only the kernel's send queue says it was never taken."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings

    def handle(self, request: Request) -> Response:
        return Response(200, b"x" * (256 * 1024), "text/plain")


def kernel_sockets(port: int) -> list[str]:
    """TCP states (hex, /proc/net/tcp) of this machine's sockets on local ``port`` other
    than the listener: a server socket closed with data the client never took stays in
    the kernel (FIN_WAIT1) for minutes; a reset one is gone."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":
                    states.append(fields[3])
    return states


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_a_client_that_does_not_read_its_answer_is_reset_at_the_deadline(
        connection: str) -> None:
    """Keep-alive, the server once left such a client idle (its answer in the kernel) for
    the whole idle timeout, an hour here; now the request deadline resets it."""
    server = ExporterServer("127.0.0.1", 0, BigApp(HttpSettings(  # type: ignore[arg-type]
        request_timeout_s=1.0, idle_timeout_s=3600.0)))
    server.start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n".encode())
        wait_for(lambda: server.connection_count() == 0, "the non-reading client to be cut")
        # Its answer is dropped, not left to the kernel (the client, its window shut,
        # may never even see the reset: that is its own affair).
        wait_for(lambda: not kernel_sockets(server.port), "the server's socket to be gone")
        sock.close()
    finally:
        server.stop()


def test_a_client_that_read_its_answer_stays_connected_past_the_deadline() -> None:
    server = ExporterServer("127.0.0.1", 0, BigApp(HttpSettings(  # type: ignore[arg-type]
        request_timeout_s=0.5, idle_timeout_s=3600.0)))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            f = sock.makefile("rb")
            for _ in range(2):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert f.readline().startswith(b"HTTP/1.1 200 ")
                while f.readline() != b"\r\n":
                    pass
                assert len(f.read(256 * 1024)) == 256 * 1024
                threading.Event().wait(1.5)  # a window past the deadline: still connected
                assert server.connection_count() == 1
    finally:
        server.stop()


class AnswerNowApp(StandInApp):
    """Answers every request on the event loop, as the App answers a scrape."""

    def answer_now(self, request: Request) -> Response:
        return Response(200, b"now\n", "text/plain")


def test_a_long_pipeline_answered_on_the_loop_is_answered_in_full(serve_app) -> None:
    """3,000 requests in one go, each answered at once: each is read in its turn (reading
    the next from the answer to the one before would recurse past Python's stack limit)."""
    server = serve_app(AnswerNowApp())
    count = 3000
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        sock.shutdown(socket.SHUT_WR)
        received = read_until_closed(sock)
    assert received.count(b"HTTP/1.1 200 OK\r\n") == count


def test_a_tls_client_that_closes_while_the_server_lingers_is_still_reset(
        serve_app, ca: CA, tmp_path: Path) -> None:
    """``Connection: close`` with a body the route did not read: the server lingers to
    drain it.  The client sends close_notify then and never reads its 256 KiB answer: the
    connection is reset, not left to the kernel to hold the answer for minutes."""
    server = serve_app(BigApp(HttpSettings(request_timeout_s=1.0, idle_timeout_s=3600.0)),
                       tls_watcher(ca, tmp_path))
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        obj.write(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1"
                  b"\r\n\r\nx")
        sock.sendall(outgoing.read())
        assert select.select([sock], [], [], 10)[0], "no answer"  # answered: lingering
        with contextlib.suppress(ssl.SSLError):
            obj.unwrap()
        sock.sendall(outgoing.read())  # close_notify; the answer is never read
        wait_for(lambda: server.connection_count() == 0 and not kernel_sockets(server.port),
                 "the connection reset, in the server's table and in the kernel")


class SlowStreamApp(StandInApp):
    """A stream made slowly: the client may be gone before it is sent."""

    def __init__(self) -> None:
        self.started, self.release, self.closed = (threading.Event(), threading.Event(),
                                                   threading.Event())

    def handle(self, request: Request) -> Response:
        self.started.set()
        self.release.wait(10)
        return Response(200, b"", "text/plain", stream=iter([b"x" * 100]),
                        on_close=self.closed.set)


def test_a_stream_made_after_its_tls_client_left_is_closed(serve_app, ca: CA,
                                                           tmp_path: Path) -> None:
    """Its ``on_close`` gives back a history-download slot: never run, two such clients
    would leave every later download a 503 until a restart."""
    app = SlowStreamApp()
    server = serve_app(app, tls_watcher(ca, tmp_path))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    tls = client_context(ca).wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"GET /history HTTP/1.1\r\nHost: x\r\n\r\n")
    assert app.started.wait(10)
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()  # a reset while the handler makes the answer
    wait_for(lambda: server.connection_count() == 0, "the connection gone")
    app.release.set()
    assert app.closed.wait(10), "the stream was never closed: its slot is leaked"
