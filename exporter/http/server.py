"""The socket side: HTTP/1.1 on an asyncio event loop, so open connections cost little.

Why an event loop: a thread per connection (the stdlib ThreadingHTTPServer this replaced)
let 64 slow clients hold every slot.  Here an idle or slow connection is one small object
and its transport (connection.py), and the limits are about time, not threads:

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

The parts, one job each: this module accepts connections and owns the loop and what the
connections share; connection.py reads, answers and ends one connection; connections.py
keeps the table and evicts; request_parser.py reads a request (h11); handler_threads.py
runs the handler off the loop; answers.py makes an answer's bytes; streaming.py sends a
body made piece by piece; tlsedge.py sets up TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter.http.answers import Answers
from exporter.http.app import App
from exporter.http.basicauth import BcryptQueue
from exporter.http.budget import OutputBudget
from exporter.http.connection import HttpConnection, Shared
from exporter.http.connections import Conn, ConnectionTable
from exporter.http.handler_threads import HandlerThreads
from exporter.http.memtrim import MemoryTrimmer
from exporter.http.streaming import STREAM_THREADS
from exporter.http.tlsedge import use_lean_ssl_buffers
from exporter.http.webwatch import WebConfigWatcher

log = logging.getLogger(__name__)

HANDLER_THREADS = 4
WATCH_INTERVAL_S = 1.0
ACCEPT_BATCH = 32
EMFILE_EVICTIONS = 32


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
        self._trimmer = MemoryTrimmer()
        self._budget: OutputBudget[Conn] = OutputBudget()
        self._shared = Shared(self._loop, app, self.web, self._table, self._budget, Answers(),
                              self._bcrypt, self._handlers, self._stream_pool, self._trimmer)
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
            shared = self._shared
            self._server = await self._loop.create_server(
                lambda: HttpConnection(shared), sock=self.socket, backlog=ACCEPT_BATCH)
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
