"""The socket side: HTTP/1.1 on an asyncio event loop, so open connections cost little.

Why an event loop: a thread per connection (the stdlib ThreadingHTTPServer this replaced)
let 64 slow clients hold every slot.  Here an idle or slow connection is a few KiB of
buffers and a suspended coroutine, and the limits are about time, not threads:

- ``request_timeout`` is a deadline for the whole request (request line, headers, body),
  counted from its first byte (from the accept, TLS handshake included, for a connection's
  first request); a client dribbling bytes is answered 408 and cut off at the deadline;
- ``idle_timeout`` is how long a keep-alive connection may wait for its next request;
- at ``max_connections`` a new client is not refused: the connection idle the longest is
  closed (one waiting for its next request, or one that connected and sent nothing), else
  the one whose request has dragged on longest; only if every connection is busy being
  answered does the newcomer get a 503;
- handlers (``App.handle`` renders in ~1 ms, a big ingest batch in tens) run on a small
  thread pool, and bcrypt on one thread of its own, so neither stalls the loop;
- running out of file descriptors on accept makes asyncio pause accepting for a second (no
  busy loop); the server then also closes up to 32 of its oldest idle connections.

What the request parser keeps from the server before: strict Content-Length framing (no
chunked uploads, conflicting lengths refused), 411/413/414/431/501/505 answers, keep-alive,
one write per response with TCP_NODELAY, HEAD, JSON errors, and a body sent with a method
that takes none closes the connection (it would be read as the next request otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from exporter import __version__
from exporter.http.app import MAX_STREAMS, App, Request, Response, error_response
from exporter.http.webwatch import WebConfigWatcher, WebState

log = logging.getLogger(__name__)

MAX_LINE = 65536  # request line and each header line, as http.server
MAX_HEADERS = 100
MAX_HEAD_BYTES = 256 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
HANDLER_THREADS = 4
LINGER_S = 2.0  # after an error answer, unread input is drained this long before closing
LINGER_BYTES = 1 << 20
WATCH_INTERVAL_S = 1.0
ACCEPT_BATCH = 32
EMFILE_EVICTIONS = 32
SERVER = f"crankshaft-exporter/{__version__}".encode()
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # fmt: skip


class _Reply(Exception):
    """Stop reading this request: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Conn:
    """One client connection and the state eviction looks at."""

    __slots__ = ("peer", "phase", "reader", "since", "task", "writer")
    IDLE, READING, BUSY = "idle", "reading", "busy"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.phase = _Conn.IDLE
        self.since = time.monotonic()
        self.task: asyncio.Task | None = None


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


def _host_for(host: str) -> tuple[socket.AddressFamily, str, bool]:
    """``host`` "" binds every interface (IPv6 and IPv4 where the kernel can)."""
    if host in ("", "::", "*") and socket.has_dualstack_ipv6():
        return socket.AF_INET6, "::", True
    if host in ("", "*"):
        return socket.AF_INET, "0.0.0.0", False
    if ":" in host:
        return socket.AF_INET6, host, False
    return socket.AF_INET, host, False


class ExporterServer:
    backlog = 1024  # the kernel caps it at net.core.somaxconn

    def __init__(self, host: str, port: int, app: App,
                 web: WebConfigWatcher | None = None) -> None:
        self.app = app
        self.web = web or WebConfigWatcher(None)
        family, bind_host, dualstack = _host_for(host)
        if family == socket.AF_INET:
            with contextlib.suppress(OSError):
                bind_host = socket.gethostbyname(bind_host)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if dualstack:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_host, port))
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.socket = sock
        self.server_address = sock.getsockname()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_exception)
        self._pool = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="crankshaft-http")
        self._bcrypt_pool = ThreadPoolExecutor(1, thread_name_prefix="crankshaft-auth")
        # Streamed bodies render on their own threads: a long download never holds up a scrape.
        self._stream_pool = ThreadPoolExecutor(STREAM_THREADS,
                                               thread_name_prefix="crankshaft-stream")
        self._conns: dict[_Conn, None] = {}
        self._idle: dict[_Conn, None] = {}  # insertion order = oldest idle first
        self._reading: dict[_Conn, None] = {}
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._date = _Date()
        self._cached_408: tuple[object, bytes] = (None, b"")
        self._last_full_warning = 0.0
        self.evicted = 0  # connections closed to make room (for tests and the log)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def connection_count(self) -> int:
        return len(self._conns)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Serve on a background thread; ``stop()`` ends it."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="crankshaft-loop",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        return self._thread

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            # asyncio accepts up to ``backlog`` connections per wake-up before it serves
            # anything else: a small batch keeps a connection flood from starving the
            # requests already in; the kernel's queue stays long (listen() again).
            self._server = await asyncio.start_server(
                self._accepted, sock=self.socket, limit=MAX_LINE + 2, backlog=ACCEPT_BATCH)
            self.socket.listen(self.backlog)
            self._loop.call_soon(self._watch)
            ready.set()

        try:
            self._loop.run_until_complete(serve())
        finally:
            ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def _watch(self) -> None:
        """Look at the web-config files now and then even with no client connecting, so
        that a bad change is logged (and counted) when it is made, not at the next scrape."""
        try:
            self.web.current()
        except Exception:
            log.exception("checking the web config files failed")
        self._loop.call_later(WATCH_INTERVAL_S, self._watch)

    def stop(self) -> None:
        if self._thread is None:
            self.socket.close()
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.writer.transport.abort()
            tasks = [c.task for c in self._conns if c.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self._loop)
        self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._bcrypt_pool.shutdown(wait=False, cancel_futures=True)
        self._stream_pool.shutdown(wait=False, cancel_futures=True)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" in context.get("message", ""):
            # asyncio pauses accepting for a second; make room meanwhile.
            now = time.monotonic()
            if now - self._last_full_warning > 10:
                self._last_full_warning = now
                log.warning("out of file descriptors accepting connections (%s): closing the "
                            "oldest idle connections; raise LimitNOFILE or lower "
                            "http.max_connections", context.get("exception"))
            for _ in range(EMFILE_EVICTIONS):  # as nginx drains its reusable connections
                if not self._evict_one():
                    break
            return
        exc = context.get("exception")
        log.debug("event loop: %s", context.get("message"), exc_info=exc)

    # --- connections -------------------------------------------------------------------------

    def _set_phase(self, conn: _Conn, phase: str) -> None:
        self._idle.pop(conn, None)
        self._reading.pop(conn, None)
        conn.phase = phase
        conn.since = time.monotonic()
        if phase == _Conn.IDLE:
            self._idle[conn] = None
        elif phase == _Conn.READING:
            self._reading[conn] = None

    def _evict_one(self) -> bool:
        """Close the connection idle the longest, else the slowest request; False if none."""
        for group in (self._idle, self._reading):
            for conn in group:
                if group is self._idle and _has_input(conn.reader):
                    continue  # its request has arrived, the loop just has not read it yet
                self._set_phase(conn, _Conn.BUSY)  # out of both groups: never picked twice
                self._conns.pop(conn, None)  # counted out now; its task ends on the abort
                conn.writer.transport.abort()
                self.evicted += 1
                kind = "idle" if group is self._idle else "slow"
                log.debug("connection limit: closed the oldest %s connection (%s)", kind,
                          conn.peer)
                return True
        return False

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = _Conn(reader, writer, peer[0] if peer else "")
        limit = self.app.settings.max_connections
        while len(self._conns) >= limit and self._evict_one():
            pass
        if len(self._conns) >= limit:
            writer.write(self._head(503, error_response(503, "too many connections; retry "
                         "shortly", {"Retry-After": "1"}), True, False, ()))
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.transport.abort()
            return
        # asyncio's TCP transports already set TCP_NODELAY: answers go out in one segment.
        conn.task = asyncio.current_task()
        self._conns[conn] = None
        self._set_phase(conn, _Conn.IDLE)
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            log.debug("connection from %s ended: %s", conn.peer, e)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("unexpected error on a connection from %s", conn.peer)
        finally:
            self._idle.pop(conn, None)
            self._reading.pop(conn, None)
            self._conns.pop(conn, None)
            writer.close()

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        settings = self.app.settings
        web = self.web.current()
        deadline = self._loop.time() + settings.request_timeout_s
        tls = web.config.ssl_context is not None
        if tls and not await self._handshake(conn, writer, web, deadline):
            return
        first = True
        while True:
            settings = self.app.settings
            self._set_phase(conn, _Conn.IDLE)
            wait = (deadline - self._loop.time()) if first else settings.idle_timeout_s
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    byte = await reader.read(1)
            except TimeoutError:
                return  # idle too long: close quietly, as keep-alive servers do
            if not byte:
                return
            if not first:
                deadline = self._loop.time() + settings.request_timeout_s
            first = False
            self._set_phase(conn, _Conn.READING)
            try:
                async with asyncio.timeout_at(deadline):
                    request, keep, http10 = await self._read_request(conn, reader, writer,
                                                                     byte)
            except TimeoutError:
                # Cheap on purpose: a slowloris crowd started together times out together.
                # One prepared write and a close (the bytes it sent were all read, so the
                # close is a FIN, not a reset); no lingering.
                writer.write(self._timeout_answer(settings.request_timeout_s, web))
                return
            except _Reply as r:
                await self._error(writer, r.status, r.message, reader)
                return
            self._set_phase(conn, _Conn.BUSY)
            response = await self._respond(request, web)
            head_only = request.method == "HEAD"
            if response.stream is None:
                if keep and http10:  # an HTTP/1.0 client keeps the connection only if told so
                    response.headers["Connection"] = "keep-alive"
                writer.write(self._head(response.status, response, not keep, head_only,
                                        web.config.headers))
                if writer.transport.get_write_buffer_size() > 0:  # the kernel took not all
                    try:
                        async with asyncio.timeout(settings.request_timeout_s):
                            await writer.drain()
                    except TimeoutError:  # a client that does not read its answer: a
                        _reset(writer)  # graceful close would wait for it to read, forever
                        return
            else:
                # A body made piece by piece (a week of history): chunked on HTTP/1.1; on
                # HTTP/1.0 the end of the body is the end of the connection.
                chunked = not http10
                keep = keep and chunked
                writer.write(self._head(response.status, response, not keep, head_only,
                                        web.config.headers,
                                        b"Transfer-Encoding: chunked" if chunked else b""))
                if head_only:
                    _close_stream(response)
                elif not await self._send_stream(writer, response, chunked,
                                                 settings.request_timeout_s):
                    return
            if not keep:
                await self._linger(writer, reader)
                return

    async def _handshake(self, conn: _Conn, writer: asyncio.StreamWriter, web: WebState,
                         deadline: float) -> bool:
        context = web.config.ssl_context
        assert context is not None
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context)
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
            log.debug("TLS handshake with %s failed: %s", conn.peer, e)
            return False
        tls = web.config.tls
        if tls is not None and tls.client_allowed_sans is not None:
            cert = writer.get_extra_info("peercert") or {}
            sans = {_san(kind, value) for kind, value in cert.get("subjectAltName", ())}
            if not sans & {_san("", v) for v in tls.client_allowed_sans}:
                log.debug("client certificate of %s has none of client_allowed_sans", conn.peer)
                return False
        return True

    # --- requests ----------------------------------------------------------------------------

    async def _read_request(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        first: bytes,
    ) -> tuple[Request, bool, bool]:
        if first == b"\x16":  # a TLS ClientHello record: say so now, not at the deadline
            raise _Reply(400, "this port serves plain HTTP, not TLS")
        line = first if first == b"\n" else first + await self._line(reader, 414, "request line")
        if line in (b"\r\n", b"\n"):  # RFC 9112 2.2: an empty line before a request is ignored
            line = await self._line(reader, 414, "request line")
        words = line.decode("latin-1").split()
        if len(words) == 2 and words[0] == "GET":
            raise _Reply(505, "HTTP/0.9 is not supported; send an HTTP/1.1 request")
        if len(words) != 3:
            raise _Reply(400, f"bad request line {line[:100].decode('latin-1').strip()!r}")
        method, target, version = words
        version_tuple = _version(version)
        if version_tuple is None:
            raise _Reply(400, f"bad HTTP version {version[:20]!r}")
        if version_tuple >= (2, 0) or version_tuple < (1, 0):
            raise _Reply(505, f"{version[:20]} is not supported; send HTTP/1.1")
        headers, lengths = await self._headers(reader)
        if method not in METHODS:
            raise _Reply(501, f"method {method[:20]!r} is not implemented")
        connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "keep-alive" in connection if version_tuple == (1, 0) else "close" not in connection
        body = b""
        if method == "POST":
            body = await self._body(reader, writer, headers, lengths, version_tuple)
        elif "content-length" in headers or "transfer-encoding" in headers:
            keep = False  # a body nobody reads would be parsed as the next request
        path, _, query = target.partition("?")
        request = Request(method, path, query, headers, conn.peer, body)
        return request, keep, version_tuple == (1, 0)

    async def _line(self, reader: asyncio.StreamReader, status: int, what: str) -> bytes:
        try:
            return await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _Reply(status, f"{what} longer than {MAX_LINE} bytes") from None
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("the client closed mid-request") from None

    async def _headers(self, reader: asyncio.StreamReader) -> tuple[dict[str, str], list[str]]:
        """Header names lower-cased, repeated ones joined with ", "; and every
        Content-Length value apart, since two that differ must be refused, not joined."""
        headers: dict[str, str] = {}
        lengths: list[str] = []
        total = 0
        for _ in range(MAX_HEADERS + 1):
            line = await self._line(reader, 431, "a header line")
            total += len(line)
            if total > MAX_HEAD_BYTES:
                raise _Reply(431, f"headers larger than {MAX_HEAD_BYTES} bytes")
            if line in (b"\r\n", b"\n"):
                return headers, lengths
            if line[:1] in (b" ", b"\t"):
                raise _Reply(400, "folded header lines are not accepted")
            name, sep, value = line.partition(b":")
            if not sep or not name or not all(c in _TOKEN for c in name):
                raise _Reply(400, f"bad header line {line[:60].decode('latin-1').strip()!r}")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t\r\n").decode("latin-1")
            if key == "content-length":
                lengths.append(text)
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        raise _Reply(431, f"more than {MAX_HEADERS} header lines")

    async def _body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    headers: dict[str, str], values: list[str],
                    version: tuple[int, int]) -> bytes:
        limit = self.app.settings.max_body_bytes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _Reply(411, "send the body with a Content-Length, not chunked")
        lengths = {v.strip() for v in values}
        if not lengths:
            raise _Reply(411, "a Content-Length header is required")
        if len(lengths) > 1:  # RFC 9112 6.3: conflicting lengths are an error, not a choice
            raise _Reply(400, "conflicting Content-Length headers")
        text = lengths.pop()
        if not (text.isascii() and text.isdigit()):
            raise _Reply(400, "Content-Length must be a whole number of bytes")
        if len(text) > 15:
            raise _Reply(413, f"body is over the limit of {limit} bytes")
        length = int(text)
        if length > limit:
            raise _Reply(413, f"body of {length} bytes is over the limit of {limit} bytes")
        if version >= (1, 1) and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("the client closed mid-body") from None

    async def _respond(self, request: Request, web: WebState) -> Response:
        if web.auth is not None:
            header = request.headers.get("authorization")
            verdict = web.auth.cached(header)
            if verdict is None:
                verdict = await self._loop.run_in_executor(self._bcrypt_pool, web.auth.verify,
                                                           header)
            if not verdict:
                return error_response(401, "this exporter needs a user name and password",
                                      {"WWW-Authenticate": 'Basic realm="crankshaft-exporter"'})
        return await self._loop.run_in_executor(self._pool, self.app.handle, request)

    # --- answers -----------------------------------------------------------------------------

    def _head(self, status: int, response: Response, close: bool, head_only: bool,
              extra: tuple[tuple[str, str], ...], framing: bytes | None = None) -> bytes:
        """Status line, headers and body in one buffer: two small writes would meet the
        client's delayed ACK and stall each keep-alive request by ~40 ms.  ``framing``
        replaces the Content-Length line of a streamed body (b"" leaves it out)."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            b"HTTP/1.1 %d %s" % (status, reason.encode()),
            b"Server: " + SERVER,
            b"Date: " + self._date(),
            b"Content-Type: " + response.content_type.encode("latin-1"),
        ]
        if framing is None:
            lines.append(b"Content-Length: %d" % len(response.body))
        elif framing:
            lines.append(framing)
        for name, value in response.headers.items():
            lines.append(f"{name}: {value}".encode("latin-1"))
        for name, value in extra:
            if name not in response.headers:
                lines.append(f"{name}: {value}".encode("latin-1"))
        if close:
            lines.append(b"Connection: close")
        lines.append(b"")
        lines.append(b"" if head_only else response.body)
        return b"\r\n".join(lines)

    async def _send_stream(self, writer: asyncio.StreamWriter, response: Response,
                           chunked: bool, timeout_s: float) -> bool:
        """The body in batches made on a stream thread, each written once the client has
        taken the one before.  A piece that fails to render, or a client that takes nothing
        for ``timeout_s``, resets the connection: the client sees a broken body (no last
        chunk, or a reset where HTTP/1.0 would take a close for the end), never a
        complete-looking wrong one."""
        assert response.stream is not None
        pending: Future[bytes | None] | None = None
        try:
            while True:
                pending = self._stream_pool.submit(_next_batch, response.stream)
                try:
                    batch = await asyncio.wrap_future(pending)
                except Exception:
                    log.exception("rendering a streamed response failed")
                    _reset(writer)
                    return False
                pending = None
                if batch is None:
                    break
                writer.write(b"%x\r\n%s\r\n" % (len(batch), batch) if chunked else batch)
                try:
                    async with asyncio.timeout(timeout_s):
                        await writer.drain()
                except (TimeoutError, OSError):
                    _reset(writer)
                    return False
        finally:
            if pending is not None and not pending.done():
                # Cancelled (the server stops) while a batch renders: close it once that
                # batch is done, on its thread; a running generator cannot be closed.
                pending.add_done_callback(lambda _: _close_stream(response))
            else:
                _close_stream(response)
        if chunked:
            writer.write(b"0\r\n\r\n")
        return True

    def _timeout_answer(self, timeout_s: float, web: WebState) -> bytes:
        key = (timeout_s, web.config.headers, self._date())
        if self._cached_408[0] != key:
            message = f"the request did not arrive within {timeout_s:g} s"
            self._cached_408 = (key, self._head(408, error_response(408, message), True, False,
                                                web.config.headers))
        return self._cached_408[1]

    async def _error(self, writer: asyncio.StreamWriter, status: int, message: str,
                     reader: asyncio.StreamReader) -> None:
        response = error_response(status, message)
        writer.write(self._head(status, response, True, False,
                                self.web.current().config.headers))
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(LINGER_S):
                await writer.drain()
        await self._linger(writer, reader)

    async def _linger(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        """Half-close, then read and drop what the client still sends for a moment: closing
        with unread input makes the kernel send a reset, which can destroy the answer
        before the client reads it."""
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
        drained = 0
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            async with asyncio.timeout(LINGER_S):
                while drained < LINGER_BYTES:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    drained += len(chunk)


# 64 KiB a batch: a client must take one within http.request_timeout, so even a slow
# cellular link (~7 KB/s at the default 10 s) gets a week of history through.
STREAM_BATCH_BYTES = 64 * 1024
# Streams at once, each holding a copy of what it sends (~14 MB for a week of history);
# more are answered 503 by the route (App.history) before any copy is made.
STREAM_THREADS = MAX_STREAMS


def _next_batch(stream: Iterator[bytes]) -> bytes | None:
    """Pieces joined up to about STREAM_BATCH_BYTES (one thread hop per batch, not per
    piece); None once the stream is done."""
    pieces: list[bytes] = []
    size = 0
    for piece in stream:
        pieces.append(piece)
        size += len(piece)
        if size >= STREAM_BATCH_BYTES:
            break
    return b"".join(pieces) if size else None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, now: unsent data is dropped (nobody waits for a client that does
    not read) and the client cannot take a truncated body for a complete one."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close_stream(response: Response) -> None:
    """Close the body's iterator and give back what the route reserved for it, once."""
    stream, response.stream = response.stream, None
    try:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    finally:
        release, response.on_close = response.on_close, None
        if release is not None:
            release()


def _has_input(reader: asyncio.StreamReader) -> bool:
    """Bytes (or the end) are waiting in the reader (CPython's StreamReader keeps them in
    ``_buffer``; without it every idle connection counts as idle)."""
    return bool(getattr(reader, "_buffer", b"")) or reader.at_eof()


def _version(text: str) -> tuple[int, int] | None:
    if not text.startswith("HTTP/"):
        return None
    parts = text[5:].split(".")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _san(kind: str, value: str) -> str:
    """A SAN as exporter-toolkit compares it (IP addresses in their canonical form)."""
    value = value.strip()
    if kind in ("IP Address", ""):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(value))
    return value

