"""The socket side: HTTP/1.1 on an asyncio event loop, so open connections cost little.

Why an event loop: a thread per connection (the stdlib ThreadingHTTPServer this replaced)
let 64 slow clients hold every slot.  Here an idle or slow connection is a few KiB of
buffers and a suspended coroutine, and the limits are about time, not threads:

- ``request_timeout`` is a deadline for the whole request (request line, headers, body),
  counted from its first byte (from the accept for a connection's first request); a client
  dribbling bytes is answered 408 and cut off at the deadline.  Over TLS the first bytes
  must arrive within it too; the handshake then has its own deadline (tlsedge.py) and the
  first request ``request_timeout`` after the handshake;
- ``idle_timeout`` is how long a keep-alive connection may wait for its next request;
- at ``max_connections`` the oldest idle connection makes room (connections.py);
- an answer the client has not taken within ``request_timeout`` resets the connection,
  keep-alive or not (the kernel would hold it for the client meanwhile), and answers
  waiting in the server's own buffers have a cap across connections (budget.py);
- handlers (``App.handle`` renders in ~1 ms, a big ingest batch in tens) run on a small
  thread pool, and bcrypt on one thread of its own with a bounded queue (basicauth.py), so
  neither stalls the loop; the web config's ``rate_limit`` answers 429 before either.  A
  scrape of the exposition that can be made without waiting on anything is made on the
  loop (``App.answer_now``): the hop to a thread would cost more than the render;
- running out of file descriptors on accept makes asyncio pause accepting for a second (no
  busy loop); the server then also closes up to 32 of its oldest idle connections.

The parts, one job each: this module accepts connections and runs each one's
read-answer loop; connections.py keeps the table and evicts; request_parser.py reads a
request (h11); handler_threads.py runs the handler off the loop; answers.py writes an
answer and ends a connection; streaming.py sends a body made piece by piece; tlsedge.py
sets up TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter.http.answers import (
    Answers,
    await_delivery,
    linger,
    reset,
    reset_transport,
    unsent_bytes,
    write_answer,
)
from exporter.http.app import App, HttpSettings, Response, error_response
from exporter.http.basicauth import BcryptQueue
from exporter.http.budget import OutputBudget
from exporter.http.connections import Conn, ConnectionTable
from exporter.http.handler_threads import HandlerThreads
from exporter.http.memtrim import MemoryTrimmer
from exporter.http.request_parser import MAX_LINE, Parsed, Reject, RequestParser
from exporter.http.streaming import STREAM_THREADS, close_stream, send_stream
from exporter.http.tlsedge import (
    HANDSHAKE_TIMEOUT_S,
    client_hello,
    handshake,
    use_lean_ssl_buffers,
)
from exporter.http.webwatch import WebConfigWatcher, WebState

log = logging.getLogger(__name__)

HANDLER_THREADS = 4
WATCH_INTERVAL_S = 1.0
ACCEPT_BATCH = 32
EMFILE_EVICTIONS = 32
READ_BYTES = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
        self._handlers = HandlerThreads(HANDLER_THREADS, "crankshaft-http")
        self._bcrypt = BcryptQueue()
        # Streamed bodies render on their own threads: a long download never holds up a scrape.
        self._stream_pool = ThreadPoolExecutor(STREAM_THREADS,
                                               thread_name_prefix="crankshaft-stream")
        self._table = ConnectionTable()
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._answers = Answers()
        self._trimmer = MemoryTrimmer()
        self._budget: OutputBudget[Conn] = OutputBudget()
        self._last_full_warning = 0.0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def connection_count(self) -> int:
        return len(self._table)

    @property
    def evicted(self) -> int:
        """Connections closed to make room (for tests and the log)."""
        return self._table.evicted

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
        use_lean_ssl_buffers()

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
        self._trimmer.maybe_trim()
        self._loop.call_later(WATCH_INTERVAL_S, self._watch)

    def stop(self) -> None:
        if self._thread is None:
            self.socket.close()
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            conns = list(self._table)
            for conn in conns:
                conn.transport.abort()
            tasks = [c.task for c in conns if c.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self._loop)
        self._thread.join(10)
        self._handlers.shutdown()
        self._bcrypt.shutdown()
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
                if not self._table.evict_one():
                    break
            return
        exc = context.get("exception")
        log.debug("event loop: %s", context.get("message"), exc_info=exc)

    # --- connections -------------------------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        set_nodelay(writer)
        conn = Conn(writer.transport, peer[0] if peer else "", lambda: _has_input(reader))
        if not self._table.admit(conn, self.app.settings.max_connections):
            writer.write(self._answers.error(503, "too many connections; retry shortly", (),
                                             {"Retry-After": "1"}))
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.transport.abort()
            return
        conn.task = asyncio.current_task()
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, OSError, ssl.SSLError) as e:
            log.debug("connection from %s ended: %s", conn.peer, e)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("unexpected error on a connection from %s", conn.peer)
        finally:
            self._table.remove(conn)
            writer.close()
            self._trimmer.connection_closed()

    async def _serve(self, conn: Conn, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        settings = self.app.settings
        web = self.web.current()
        deadline = self._loop.time() + settings.request_timeout_s
        if web.config.ssl_context is not None:
            handshake_deadline = await client_hello(
                writer, deadline, min(HANDSHAKE_TIMEOUT_S, settings.request_timeout_s))
            if handshake_deadline is None:
                return  # said nothing, or half a ClientHello, in time: closed quietly
            self._table.set_phase(conn, Conn.READING)
            if not await handshake(writer, web, conn.peer, handshake_deadline):
                return
            conn.transport = writer.transport
            deadline = self._loop.time() + settings.request_timeout_s
        parser = RequestParser(settings.max_body_bytes, conn.peer)
        first = True
        while True:
            settings = self.app.settings
            parser.max_body_bytes = settings.max_body_bytes
            if parser.idle:
                self._table.set_phase(conn, Conn.IDLE)
                if first:
                    data = await _next_bytes(reader, deadline - self._loop.time())
                else:
                    data = await _next_bytes_after_answer(reader, writer, conn.raw, settings)
                if not data:
                    return
                parser.feed(data)
            if not first:
                deadline = self._loop.time() + settings.request_timeout_s
            first = False
            self._table.set_phase(conn, Conn.READING)
            try:
                # Usually the first read held the whole request: no deadline timer needed.
                parsed = parser.next_request()
                if parsed is None:
                    async with asyncio.timeout_at(deadline):
                        parsed = await _read_request(parser, reader, writer)
            except TimeoutError:
                # The bytes it sent were all read, so the close is a FIN, not a reset.
                writer.write(self._answers.timeout(settings.request_timeout_s,
                                                   web.config.headers))
                return
            except Reject as r:
                writer.write(self._answers.error(r.status, r.message, web.config.headers))
                with contextlib.suppress(TimeoutError, OSError):
                    async with asyncio.timeout(settings.request_timeout_s):
                        await writer.drain()
                await linger(writer, reader, True)
                return
            self._table.set_phase(conn, Conn.BUSY)
            response = await self._respond(parsed, web)
            sent = await self._answer(conn, writer, parsed, response, web)
            del response  # an idle connection must not pin its last answer (~0.3 MB JSON)
            if not sent:
                return
            if not parsed.keep_alive:
                await linger(writer, reader, _has_body(parsed))
                await await_delivery(writer, settings.request_timeout_s, conn.raw)
                return

    async def _answer(self, conn: Conn, writer: asyncio.StreamWriter, parsed: Parsed,
                      response: Response, web: WebState) -> bool:
        """Write the answer; False if the connection had to be reset."""
        timeout_s = self.app.settings.request_timeout_s
        head_only = parsed.request.method == "HEAD"
        if response.stream is None:
            if parsed.keep_alive and parsed.http10:  # HTTP/1.0 keeps it only if told so
                response.headers["Connection"] = "keep-alive"
            data = self._answers.render(response.status, response, not parsed.keep_alive,
                                        head_only, web.config.headers)
            try:
                return await write_answer(writer, data, timeout_s, conn.raw,
                                          lambda n: self._hold(conn, n))
            finally:
                self._budget.release(conn)
        # A body made piece by piece (a week of history): chunked on HTTP/1.1; on HTTP/1.0
        # the end of the body is the end of the connection.
        chunked = not parsed.http10
        parsed.keep_alive = parsed.keep_alive and chunked
        writer.write(self._answers.render(
            response.status, response, not parsed.keep_alive, head_only, web.config.headers,
            b"Transfer-Encoding: chunked" if chunked else b""))
        if head_only:
            close_stream(response)
            return True
        return await send_stream(writer, response, chunked, timeout_s, self._stream_pool)

    def _hold(self, conn: Conn, nbytes: int) -> None:
        """``conn`` has ``nbytes`` of its answer waiting here; over the cap, the connections
        waiting longest are reset."""
        for victim in self._budget.hold(conn, nbytes):
            log.debug("answers waiting in memory are over %d bytes: reset %s",
                      self._budget.cap, victim.peer)
            reset_transport(victim.transport)

    async def _respond(self, parsed: Parsed, web: WebState) -> Response:
        request = parsed.request
        if web.limiter is not None and not web.limiter.allow():
            retry = max(1, math.ceil(web.limiter.wait_s()))
            return error_response(429, "too many requests: the web config's rate_limit "
                                  f"allows one every {web.limiter.interval_s:g}s",
                                  {"Retry-After": str(retry)})
        if web.auth is not None:
            header = request.headers.get("authorization")
            verdict = web.auth.cached(header)
            if verdict is None:
                verdict = await self._bcrypt.verify(web.auth, header)
            if verdict is None:
                return error_response(503, "too many password checks are waiting; retry "
                                      "shortly", {"Retry-After": "1"})
            if not verdict:
                return error_response(401, "this exporter needs a user name and password",
                                      {"WWW-Authenticate": 'Basic realm="crankshaft-exporter"'})
        response = self.app.answer_now(request)  # a scrape that needs no waiting
        if response is not None:
            return response
        return await self._handlers.run(self._loop, self.app.handle, request)


async def _next_bytes(reader: asyncio.StreamReader, wait_s: float) -> bytes:
    """What the client sends within ``wait_s``; b"" if nothing (then the connection is
    closed quietly, as keep-alive servers do) or it closed."""
    try:
        async with asyncio.timeout(max(wait_s, 0.001)):
            return await reader.read(READ_BYTES)
    except TimeoutError:
        return b""


async def _next_bytes_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                   raw: asyncio.BaseTransport, settings: HttpSettings) -> bytes:
    """The next request's first bytes on a keep-alive connection.  A client that has not
    taken its last answer within the request deadline is reset rather than left idle:
    the kernel would hold the answer for it until the idle timeout."""
    deliver_s, idle_s = settings.request_timeout_s, settings.idle_timeout_s
    if deliver_s < idle_s and unsent_bytes(writer, raw) > 0:
        data = await _next_bytes(reader, deliver_s)
        if data or reader.at_eof():
            return data
        if unsent_bytes(writer, raw) > 0:
            reset(writer)
            return b""
        idle_s -= deliver_s
    return await _next_bytes(reader, idle_s)


async def _read_request(parser: RequestParser, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> Parsed:
    """The parser fed until it has a whole request (the caller sets the deadline)."""
    continued = False
    while True:
        parsed = parser.next_request()
        if parsed is not None:
            return parsed
        if parser.wants_continue and not continued:
            writer.write(CONTINUE)
            continued = True
        data = await reader.read(READ_BYTES)
        if not data:
            raise ConnectionResetError("the client closed mid-request")
        parser.feed(data)


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Answers go out at once, not after the client's delayed ACK of the one before.
    asyncio sets TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP, which
    accepted sockets do not report (they say 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _has_body(parsed: Parsed) -> bool:
    headers = parsed.request.headers
    return "content-length" in headers or "transfer-encoding" in headers


def _has_input(reader: asyncio.StreamReader) -> bool:
    """Bytes (or the end) are waiting in the reader (CPython's StreamReader keeps them in
    ``_buffer``; without it every idle connection counts as idle)."""
    return bool(getattr(reader, "_buffer", b"")) or reader.at_eof()
