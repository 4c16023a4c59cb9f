"""One client connection: its requests read, answered and its end, as event-loop callbacks.

Why callbacks and not asyncio streams: a connection here is this one object, its transport
and at most one timer.  With streams each connection was also a reader, a writer, their
protocol, a task and a stack of suspended coroutines with their timeouts (~9 KiB of Python
objects a TLS connection): a crowd of hostile clients left Python's allocator holding
arenas of them after it left, and every request paid for their wake-ups
(tests/bench/bench_hostile.py, bench_scrape_cpu.py).  A coroutine runs only while a request
truly waits on something: a password check, a streamed body, a TLS handshake.

The life of a connection (``_state``):

- ``SETUP``: over TLS, until the handshake is done (tlsedge.py); bytes that come with the
  handshake's end are kept for the first request;
- ``READ``: waiting for a request, or for the rest of one.  The first request's deadline
  counts from the accept (or the handshake); a later one's from its first byte, and before
  that byte the keep-alive idle timeout runs;
- ``BUSY``: a whole request is being answered, reading paused (a pipelined request waits in
  the kernel);
- ``WRITE``: an answer the kernel did not take at once waits for the client (over TLS,
  the rest of it, a piece at a time), within the request deadline, else the connection is
  reset;
- ``LINGER``: the last answer is written; what the client still sends is read and dropped
  for a moment, so that closing with unread input does not reset the answer away;
- ``DELIVER``: waiting for the client to take the last answer before the close;
- ``CLOSED``.

Timers are lazy: a deadline moved later leaves its timer in place, and the timer, when it
fires, looks at the current deadline (a keep-alive connection makes no timer per request;
cancelled timers would stay in the loop's heap until due).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from exporter.http.answers import Answers, buffered_bytes, reset_transport, unsent_bytes
from exporter.http.app import App, Response, error_response
from exporter.http.basicauth import BcryptQueue
from exporter.http.budget import OutputBudget
from exporter.http.connections import Conn, ConnectionTable
from exporter.http.handler_threads import HandlerThreads
from exporter.http.memtrim import MemoryTrimmer
from exporter.http.request_parser import Parsed, Reject, RequestParser
from exporter.http.streaming import close_stream, send_stream
from exporter.http.tlsedge import HANDSHAKE_TIMEOUT_S, client_hello_needs, handshake
from exporter.http.webwatch import WebConfigWatcher, WebState

log = logging.getLogger(__name__)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_S = 2.0  # after the last answer, unread input is drained this long before closing
LINGER_BYTES = 1 << 20
WRITE_CHUNK = 64 * 1024  # a larger answer over TLS goes this much at a time
DELIVERY_POLL_S = 0.05
REFUSED_CLOSE_S = 1.0  # a connection refused at the limit: its 503 gets this long

SETUP, READ, BUSY, WRITE, LINGER, DELIVER, CLOSED = range(7)


@dataclass(eq=False)
class Shared:
    """What every connection of one server uses."""

    loop: asyncio.AbstractEventLoop
    app: App
    web: WebConfigWatcher
    table: ConnectionTable
    budget: OutputBudget[Conn]
    answers: Answers
    bcrypt: BcryptQueue
    handlers: HandlerThreads
    stream_pool: Executor
    trimmer: MemoryTrimmer


class HttpConnection(Conn, asyncio.Protocol):
    __slots__ = ("_continued", "_deadline", "_delivery_end", "_eof", "_first",
                 "_handshake_at", "_hello", "_idle_rest", "_lingered", "_out", "_out_at",
                 "_parser", "_paused", "_request", "_s", "_state", "_streaming", "_timer",
                 "_timer_at", "_waiter", "_web")

    def __init__(self, shared: Shared) -> None:
        self._s = shared
        self._state = SETUP
        self._parser = RequestParser(shared.app.settings.max_body_bytes)
        self._web: WebState | None = None
        self._request: Parsed | None = None  # being answered
        self._out: bytes | None = None  # its answer, while some of it is still to be written
        self._out_at = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = math.inf  # when the current state's wait runs out
        self._idle_rest = 0.0  # keep-alive time left after the delivery check
        self._delivery_end = 0.0
        self._continued = False
        self._first = True  # the connection's first request: its deadline counts from the accept
        self._eof = False
        self._paused = False  # writing paused: the transport's buffer is over its mark
        self._waiter: asyncio.Future[None] | None = None  # a coroutine's drain()
        self._lingered = 0
        self._streaming = False
        self._hello: socket.socket | None = None  # TLS: watched until the ClientHello is here
        self._handshake_at = 0.0  # TLS: the handshake's deadline, from the first byte

    # --- asyncio's callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        Conn.__init__(self, transport, peer[0] if peer else "")
        self._parser.client_ip = self.peer
        set_nodelay(transport)
        s = self._s
        settings = s.app.settings
        if not s.table.admit(self, settings.max_connections):
            self._state = CLOSED
            transport.write(s.answers.error(503, "too many connections; retry shortly", (),
                                            {"Retry-After": "1"}))
            transport.close()
            s.loop.call_later(REFUSED_CLOSE_S, transport.abort)
            return
        self._web = web = s.web.current()
        deadline = s.loop.time() + settings.request_timeout_s
        if web.config.ssl_context is not None:
            self._watch_for_hello(deadline)
        else:
            self._await_request(deadline)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == LINGER:
            self._lingered += len(data)
            if self._lingered >= LINGER_BYTES:
                self._deliver()
            return
        if state in (CLOSED, DELIVER):
            return
        self._parser.feed(data)
        if state == READ:
            try:
                self._read()
            except Exception:
                self._fail()
        # SETUP: the first request came with the handshake's end; BUSY/WRITE: a pipelined
        # request that came before reading paused.  Both are read in their turn.

    def eof_received(self) -> bool:
        self._eof = True
        state = self._state
        tls = self._web is None or self._web.config.ssl_context is not None
        if state == LINGER:
            if tls:  # asyncio's TLS layer closes after this returns: look then
                self._s.loop.call_soon(self._deliver_if_lingering)
            else:
                self._deliver()
        elif state == READ:
            if not self._parser.idle:
                log.debug("connection from %s ended: the client closed mid-request", self.peer)
            self.transport.close()
        # Over plain TCP the answer being made is still written, the close is ours; a TLS
        # transport closes on the client's close_notify whatever this says (and warns if
        # told otherwise).
        return not tls

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_waiter()
        if self._state == WRITE:
            self._state = BUSY
            try:
                self._write_out()
            except Exception:
                self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection from %s ended: %s", self.peer, exc)
        self._forget()

    def has_input(self) -> bool:
        return self._eof or not self._parser.idle

    # --- for streaming.py ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        if self._paused and self._state != CLOSED:
            self._waiter = self._s.loop.create_future()
            await self._waiter
        if self._state == CLOSED:
            raise ConnectionResetError("the connection is closed")

    def reset(self) -> None:
        reset_transport(self.transport)

    # --- TLS ----------------------------------------------------------------------------------

    def _watch_for_hello(self, deadline: float) -> None:
        """Wait, reading nothing, until the client's ClientHello is here whole (or other
        bytes, or the end): its first byte by ``deadline``, the rest within the handshake's
        deadline, counted from that byte.  The transport's reads stay paused, so the bytes
        are left for the TLS layer: a duplicate descriptor is watched (asyncio lets no one
        else watch the transport's own), and while part of the ClientHello is here the
        socket's SO_RCVLOWAT makes it readable only once all of it is."""
        raw = self.raw
        raw.pause_reading()
        sock = raw.get_extra_info("socket")
        self._hello = watch = socket.socket(fileno=os.dup(sock.fileno()))
        watch.setblocking(False)
        self._s.loop.add_reader(watch.fileno(), self._hello_readable)
        self._wait_until(deadline)

    def _hello_readable(self) -> None:
        s = self._s
        watch = self._hello
        if watch is None or self._state != SETUP:
            return
        need = 0
        if not self._handshake_at:  # the first byte: the handshake's deadline starts
            self._handshake_at = s.loop.time() + min(HANDSHAKE_TIMEOUT_S,
                                                     s.app.settings.request_timeout_s)
            s.table.set_phase(self, Conn.READING)
            need = client_hello_needs(watch)
        # Readable again (all of it came, or the end): the TLS layer takes it from here.
        if need:
            with contextlib.suppress(OSError):
                watch.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, need)
            self._wait_until(self._handshake_at)
            return
        self._stop_watching()
        self._deadline = math.inf
        self.task = s.loop.create_task(self._set_up_tls(self._handshake_at))

    def _stop_watching(self) -> None:
        watch, self._hello = self._hello, None
        if watch is not None:
            with contextlib.suppress(OSError, ValueError):
                self._s.loop.remove_reader(watch.fileno())
                watch.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            watch.close()

    async def _set_up_tls(self, handshake_deadline: float) -> None:
        """The handshake made, then the first request read."""
        s = self._s
        web = self._web
        assert web is not None
        raw = self.raw
        tls: asyncio.Transport | None = None
        try:
            tls = await handshake(raw, self, web, self.peer, handshake_deadline)
        finally:
            self.task = None
            if tls is None:
                # The handshake failed: closed quietly.  asyncio tells a protocol nothing
                # of a failed handshake.
                if not raw.is_closing():
                    raw.close()
                self._forget()
        if tls is None:
            return
        self.transport = tls
        if self._state == SETUP:
            try:
                self._await_request(s.loop.time() + s.app.settings.request_timeout_s)
            except Exception:
                self._fail()

    # --- reading a request ----------------------------------------------------------------------

    def _await_request(self, deadline: float) -> None:
        """The first request, due by ``deadline``."""
        self._state = READ
        self._s.table.set_phase(self, Conn.IDLE)
        self._wait_until(deadline)
        if not self._parser.idle:
            self._read()
        elif self._eof:
            self.transport.close()

    def _read(self) -> None:
        """Parse what has come; answer a whole request, refuse a bad one."""
        s = self._s
        settings = s.app.settings
        parser = self._parser
        parser.max_body_bytes = settings.max_body_bytes
        try:
            parsed = parser.next_request()
        except Reject as r:
            assert self._web is not None
            self.transport.write(s.answers.error(r.status, r.message, self._web.config.headers))
            self._close_after_answer(unread_input=True)
            return
        if parsed is None:
            if self.phase == Conn.IDLE:
                # Part of a request; usually the first read holds all of it, and no
                # deadline needs setting.  A later request's counts from its first byte.
                if not self._first:
                    self._idle_rest = 0.0
                    self._wait_until(s.loop.time() + settings.request_timeout_s)
                s.table.set_phase(self, Conn.READING)
            if parser.wants_continue and not self._continued:
                self.transport.write(CONTINUE)
                self._continued = True
            if self._eof:
                log.debug("connection from %s ended: the client closed mid-request", self.peer)
                self.transport.close()
            return
        parsed.request.received = time.monotonic()
        self._continued = False
        self._deadline = math.inf
        self._state = BUSY
        s.table.set_phase(self, Conn.BUSY)
        self.transport.pause_reading()
        self._respond(parsed)

    def _read_pipelined(self) -> None:
        if self._state == READ:  # unless data_received has read it meanwhile
            try:
                self._read()
            except Exception:
                self._fail()

    # --- answering ------------------------------------------------------------------------------

    def _respond(self, parsed: Parsed) -> None:
        """The answer now if it needs no waiting; else once the check or handler is done."""
        s = self._s
        web = self._web
        assert web is not None
        request = parsed.request
        if web.limiter is not None and not web.limiter.allow():
            retry = max(1, math.ceil(web.limiter.wait_s()))
            self._send(parsed, error_response(
                429, "too many requests: the web config's rate_limit allows one every "
                f"{web.limiter.interval_s:g}s", {"Retry-After": str(retry)}))
            return
        if web.auth is not None:
            verdict = web.auth.cached(request.headers.get("authorization"))
            if verdict is None:
                self.task = s.loop.create_task(self._respond_after_check(parsed, web))
                return
            if not verdict:
                self._send(parsed, _unauthorized())
                return
        self._respond_authorized(parsed)

    async def _respond_after_check(self, parsed: Parsed, web: WebState) -> None:
        assert web.auth is not None
        try:
            verdict = await self._s.bcrypt.verify(web.auth, parsed.request.headers.get(
                "authorization"))
        except Exception:
            self._fail()
            return
        finally:
            self.task = None
        try:
            if verdict is None:
                self._send(parsed, error_response(503, "too many password checks are "
                                                  "waiting; retry shortly", {"Retry-After": "1"}))
            elif not verdict:
                self._send(parsed, _unauthorized())
            else:
                self._respond_authorized(parsed)
        except Exception:
            self._fail()

    def _respond_authorized(self, parsed: Parsed) -> None:
        s = self._s
        response = s.app.answer_now(parsed.request)  # a scrape that needs no waiting
        if response is not None:
            self._send(parsed, response)
            return
        request = parsed.request
        future = s.handlers.run(s.loop, s.app.handle, request, s.app.is_scrape(request))
        future.add_done_callback(partial(self._handled, parsed))

    def _handled(self, parsed: Parsed, future: asyncio.Future[Response]) -> None:
        try:
            # Sent, or if the connection is gone meanwhile, a stream closed (its download
            # slot given back).
            self._send(parsed, future.result())
        except Exception:
            if self._state != CLOSED:
                self._fail()

    def _send(self, parsed: Parsed, response: Response) -> None:
        """Write the answer, then go on (or wait for the client to take it)."""
        if self._state == CLOSED:
            close_stream(response)
            return
        s = self._s
        web = self._web
        assert web is not None
        head_only = parsed.request.method == "HEAD"
        if response.stream is not None:
            self._streaming = True  # the task closes the stream however it ends
            self.task = s.loop.create_task(self._send_stream(parsed, response, head_only))
            return
        if parsed.keep_alive and parsed.http10:  # HTTP/1.0 keeps it only if told so
            response.headers["Connection"] = "keep-alive"
        data = s.answers.render(response.status, response, not parsed.keep_alive, head_only,
                                web.config.headers)
        del response  # an idle connection must not pin its last answer (~0.3 MB JSON)
        self._request = parsed
        self._out = data
        self._out_at = 0
        self._write_out()

    def _write_out(self) -> None:
        """Write what is left of the answer while the transport takes it; once all of it
        is written and taken, the next request.  Over plain TCP it goes in one write (what
        the kernel does not take waits in the transport, counted against the budget); over
        TLS a piece at a time as the client takes them: OpenSSL's output buffer keeps the
        largest size it ever held, for the life of the connection.  A client that takes
        nothing for the request deadline is reset (``_expired``)."""
        data = self._out or b""
        piece = WRITE_CHUNK if self.transport is not self.raw else len(data)
        while self._out_at < len(data) and not self._paused:
            start = self._out_at
            self.transport.write(data[start:start + piece] if piece < len(data) else data)
            self._out_at = start + piece
        left = max(0, len(data) - self._out_at)
        if left == 0:
            self._out = None  # the transport holds what is unsent: the answer is not pinned
        if not self._paused:
            parsed, self._request = self._request, None
            assert parsed is not None
            self._answered(parsed)
            return
        self._hold(left + buffered_bytes(self.transport, self.raw))
        self._state = WRITE
        self._wait_until(self._s.loop.time() + self._s.app.settings.request_timeout_s)

    async def _send_stream(self, parsed: Parsed, response: Response, head_only: bool) -> None:
        """A body made piece by piece (a week of history): chunked on HTTP/1.1; on HTTP/1.0
        the end of the body is the end of the connection."""
        s = self._s
        assert self._web is not None
        chunked = not parsed.http10
        parsed.keep_alive = parsed.keep_alive and chunked
        self.transport.write(s.answers.render(
            response.status, response, not parsed.keep_alive, head_only,
            self._web.config.headers, b"Transfer-Encoding: chunked" if chunked else b""))
        try:
            if head_only:
                close_stream(response)
                sent = True
            else:
                sent = await send_stream(self, response, chunked,
                                         s.app.settings.request_timeout_s, s.stream_pool)
            if sent and self._state != CLOSED:
                self._answered(parsed)
        except Exception:
            close_stream(response)
            self._fail()
        finally:
            self.task = None
            self._streaming = False

    def _hold(self, nbytes: int) -> None:
        """This connection has ``nbytes`` of its answer waiting here; over the cap, the
        connections waiting longest are reset."""
        budget = self._s.budget
        for victim in budget.hold(self, nbytes):
            log.debug("answers waiting in memory are over %d bytes: reset %s", budget.cap,
                      victim.peer)
            reset_transport(victim.transport)

    def _answered(self, parsed: Parsed) -> None:
        """The answer is written (the kernel has it, or most of it): the next request."""
        s = self._s
        s.budget.release(self)
        if self._state == CLOSED:
            return
        if not parsed.keep_alive:
            headers = parsed.request.headers
            self._close_after_answer("content-length" in headers
                                     or "transfer-encoding" in headers)
            return
        self._state = READ
        self._first = False
        s.table.set_phase(self, Conn.IDLE)
        self.transport.resume_reading()
        if not self._parser.idle:
            # Pipelined: read in the loop's next pass, so that other connections have their
            # turn and a long pipeline does not recurse.
            s.loop.call_soon(self._read_pipelined)
            return
        if self._eof:
            self.transport.close()
            return
        # A client that has not taken its last answer within the request deadline is reset
        # rather than left idle: the kernel would hold the answer for it until the idle
        # timeout.
        settings = s.app.settings
        deliver_s, idle_s = settings.request_timeout_s, settings.idle_timeout_s
        now = s.loop.time()
        if deliver_s < idle_s and unsent_bytes(self.transport, self.raw) > 0:
            self._idle_rest = idle_s - deliver_s
            self._wait_until(now + deliver_s)
        else:
            self._idle_rest = 0.0
            self._wait_until(now + idle_s)

    # --- the end ---------------------------------------------------------------------------------

    def _close_after_answer(self, unread_input: bool) -> None:
        """Closing with unread input makes the kernel send a reset, which can destroy the
        answer before the client reads it: so half-close, then read and drop what the
        client still sends for a moment.  Over TLS there is no half-close; a client that
        sent nothing more is closed at once (the close sends close_notify, which it reads
        as the end), else its input is drained first."""
        transport = self.transport
        self._state = LINGER
        self._lingered = 0
        if transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()
        elif not unread_input and self._parser.idle and not self._eof:
            self._deliver()
            return
        if self._eof:
            self._deliver()
            return
        transport.resume_reading()
        self._wait_until(self._s.loop.time() + LINGER_S)

    def _deliver(self) -> None:
        """Close once the client has taken everything written; reset it if it has not
        within the request deadline.  Looks every 50 ms, only while something is unsent."""
        self._state = DELIVER
        with contextlib.suppress(RuntimeError):
            self.transport.pause_reading()
        self._delivery_end = self._s.loop.time() + self._s.app.settings.request_timeout_s
        self._check_delivery()

    def _deliver_if_lingering(self) -> None:
        if self._state == LINGER:
            self._deliver()

    def _check_delivery(self) -> None:
        """A client that has not taken the answer by the deadline, or whose connection is
        closing meanwhile (a TLS close_notify), is reset: the kernel would otherwise hold
        the answer for it for minutes."""
        transport = self.transport
        if unsent_bytes(transport, self.raw) == 0:
            self._deadline = math.inf
            transport.close()
        elif transport.is_closing() or self._s.loop.time() >= self._delivery_end:
            self._deadline = math.inf
            self.reset()
        else:
            self._wait_until(self._s.loop.time() + DELIVERY_POLL_S)

    def _forget(self) -> None:
        """The connection is gone: out of the table, its timer and task with it."""
        if self._state == CLOSED and self._timer is None and self.task is None:
            return
        was_closed = self._state == CLOSED
        self._state = CLOSED
        self._deadline = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task() and not self._streaming:
            # A stream's task goes on until its next write finds the connection gone: it
            # closes the stream then (cancelled before its first step, it never would).
            task.cancel()
        self._wake_waiter()
        self._stop_watching()
        self._request = None
        self._out = None
        s = self._s
        s.budget.release(self)
        s.table.remove(self)
        if not was_closed:
            s.trimmer.connection_closed()

    def _fail(self) -> None:
        log.exception("unexpected error on a connection from %s", self.peer)
        self.transport.abort()

    def _wake_waiter(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- time --------------------------------------------------------------------------------

    def _wait_until(self, deadline: float) -> None:
        """``_expired`` runs at ``deadline`` (a later one than the timer's leaves the timer
        be: it looks again when it fires)."""
        self._deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._s.loop.call_at(deadline, self._expired)
            self._timer_at = deadline

    def _expired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline == math.inf or self._state == CLOSED:
            return
        if self._s.loop.time() < deadline:
            self._timer = self._s.loop.call_at(deadline, self._expired)
            self._timer_at = deadline
            return
        self._deadline = math.inf
        state = self._state
        try:
            if state == SETUP:  # said nothing, or half a ClientHello, in time
                self.raw.close()
                self._forget()  # stops watching for the ClientHello too
            elif state == READ:
                self._read_expired()
            elif state == WRITE:
                self.reset()  # the client did not take its answer in time
            elif state == LINGER:
                self._deliver()
            elif state == DELIVER:
                self._check_delivery()
        except Exception:
            self._fail()

    def _read_expired(self) -> None:
        if not self._parser.idle:
            # The bytes it sent were all read, so the close is a FIN, not a reset.
            assert self._web is not None
            settings = self._s.app.settings
            self.transport.write(self._s.answers.timeout(settings.request_timeout_s,
                                                         self._web.config.headers))
            self.transport.close()
        elif self._idle_rest > 0:  # the delivery check of a keep-alive connection
            if unsent_bytes(self.transport, self.raw) > 0:
                self.reset()
            else:
                rest, self._idle_rest = self._idle_rest, 0.0
                self._wait_until(self._s.loop.time() + rest)
        else:
            self.transport.close()  # no request came: closed quietly, as keep-alive servers do


def _unauthorized() -> Response:
    return error_response(401, "this exporter needs a user name and password",
                          {"WWW-Authenticate": 'Basic realm="crankshaft-exporter"'})


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Answers go out at once, not after the client's delayed ACK of the one before.
    asyncio sets TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP, which
    accepted sockets do not report (they say 0)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

