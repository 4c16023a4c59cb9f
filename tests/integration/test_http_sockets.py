"""The server's own sockets, read in-process: TCP_NODELAY on every accepted connection
(plain and TLS), and how a TLS connection ends after ``Connection: close``."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.http import answers
from exporter.http.app import HttpSettings, Request, Response
from exporter.http.connections import Conn
from exporter.http.server import ExporterServer
from exporter.http.webconfig import load_web_config
from exporter.http.webwatch import WebConfigWatcher
from tests.helpers import wait_for
from tests.tlsfiles import CA, client_context, write_web_config


class HelloApp:
    settings = HttpSettings()

    def handle(self, request: Request) -> Response:
        return Response(200, b"hello\n", "text/plain")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def serve() -> Iterator:
    servers: list[ExporterServer] = []

    def start(web: WebConfigWatcher | None = None) -> ExporterServer:
        server = ExporterServer("127.0.0.1", 0, HelloApp(), web)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


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
    answer is sent.  The linger is made an hour long here: had the server waited for the
    client to close first (as it must on an error with unread input), this client's read
    would time out instead of ending."""
    monkeypatch.setattr(answers, "LINGER_S", 3600.0)
    server = serve(tls_watcher(ca, tmp_path))
    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as raw, \
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
