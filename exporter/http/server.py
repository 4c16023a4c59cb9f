"""The socket side: stdlib threading HTTP server, hardened for a long-running exporter.

- a listen backlog of 128 (socketserver's default of 5 overflows under 16 concurrent
  clients here and pushes p99 into hundreds of milliseconds);
- a per-connection socket timeout, so a slow or stalled client holds one thread for at most
  that long, and a cap on connections served at once (answered 503 beyond it);
- keep-alive (HTTP/1.1), since Prometheus and dashboards poll the same server forever;
- errors as JSON, never the stdlib's HTML pages or tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.http.app import App, Request, error_response

log = logging.getLogger(__name__)


class ExporterHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # responses are complete when written; send them now
    server_version = f"crankshaft-exporter/{__version__}"
    server: ExporterServer

    def setup(self) -> None:
        self.timeout = self.server.app.settings.request_timeout_s
        super().setup()

    def _serve(self) -> None:
        app = self.server.app
        body = b""
        if self.command == "POST":
            body_or_none = self._read_body(app.settings.max_body_bytes)
            if body_or_none is None:
                return
            body = body_or_none
        elif "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
            # A body nobody reads would be parsed as the next request: answer, then close.
            self.close_connection = True
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            client_ip=self.client_address[0],
            body=body,
        )
        self._send(app.handle(request))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def _read_body(self, limit: int) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "send the body with a Content-Length, not chunked")
            return None
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not lengths:
            self._refuse(411, "a Content-Length header is required")
            return None
        if len(lengths) > 1:  # RFC 9112 6.3: conflicting lengths are an error, not a choice
            self._refuse(400, "conflicting Content-Length headers")
            return None
        length_text = lengths.pop()
        if not (length_text.isascii() and length_text.isdigit()):
            self._refuse(400, "Content-Length must be a whole number of bytes")
            return None
        if len(length_text) > 15:
            self._refuse(413, f"body is over the limit of {limit} bytes")
            return None
        length = int(length_text)
        if length > limit:
            self._refuse(413, f"body of {length} bytes is over the limit of {limit} bytes")
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _refuse(self, status: int, message: str) -> None:
        """Answer without reading the body, then close: the unread body would be taken
        for the next request."""
        self.close_connection = True
        response = error_response(status, message)
        response.headers["Connection"] = "close"
        self._send(response)

    def _send(self, response: Any) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        stream = response.stream
        chunked = stream is not None and self.request_version == "HTTP/1.1"
        if stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:  # HTTP/1.0 has no chunks: the end of the body is the end of the connection
            self.close_connection = True
            self.send_header("Connection", "close")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if stream is not None:
            self._send_stream(stream, chunked)
            return
        # Headers and body in one write: two small writes meet the client's delayed ACK and
        # stall each keep-alive request by ~40 ms.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(response.body)
        self.wfile.write(b"".join(self._headers_buffer))
        self._headers_buffer = []

    def _send_stream(self, stream: Any, chunked: bool) -> None:
        """Headers, then the body piece by piece as it is made (chunked on HTTP/1.1).  A
        piece that fails to render ends the connection without the last chunk, so the
        client sees a truncated body, never a complete-looking wrong one."""
        self._headers_buffer.append(b"\r\n")
        self.wfile.write(b"".join(self._headers_buffer))
        self._headers_buffer = []
        if self.command == "HEAD":
            return
        try:
            for piece in stream:
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        except OSError:
            self.close_connection = True
            raise
        except Exception:
            log.exception("rendering a streamed response failed")
            self.close_connection = True
            return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed request lines, oversized headers, unknown methods: JSON like the rest."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the request line did not parse: nobody
            self.request_version = "HTTP/1.0"  # speaks 0.9 any more, answer with a status
        body = json.dumps({"error": message or self.responses.get(code, ("error",))[0]}).encode()
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.client_address[0], format % args)


class ExporterServer(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: App) -> None:
        """``host`` "" binds every interface (IPv6 and IPv4 where the kernel can)."""
        self.app = app
        self._dualstack = False
        if host in ("", "::", "*") and socket.has_dualstack_ipv6():
            host, self._dualstack = "::", True
            self.address_family = socket.AF_INET6
        elif host in ("", "*"):
            host = "0.0.0.0"
        elif ":" in host:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(app.settings.max_connections)
        super().__init__((host, port), ExporterHandler)

    def server_bind(self) -> None:
        if self._dualstack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "too many connections; retry shortly"}'
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def start(self) -> threading.Thread:
        """Serve on a background thread; ``stop()`` ends it."""
        thread = threading.Thread(target=self.serve_forever, name="crankshaft-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
