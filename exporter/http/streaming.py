"""Streamed bodies (a week of history): made in batches on threads of their own, so a long
download never holds up a scrape, and written only as fast as the client takes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from typing import Protocol

from exporter.http.app import MAX_STREAMS, Response

log = logging.getLogger(__name__)

# 64 KiB a batch: a client must take one within http.request_timeout, so even a slow
# cellular link (~7 KB/s at the default 10 s) gets a week of history through.
STREAM_BATCH_BYTES = 64 * 1024
# Streams at once, each holding a copy of what it sends (~14 MB for a week of history);
# more are answered 503 by the route (App.history) before any copy is made.
STREAM_THREADS = MAX_STREAMS


class Sink(Protocol):
    """Where a stream goes: a connection (connection.py)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Return once the client has taken enough; raise OSError if it is gone."""

    def reset(self) -> None: ...


async def send_stream(sink: Sink, response: Response, chunked: bool, timeout_s: float,
                      pool: Executor) -> bool:
    """The body in batches made on ``pool``, each written once the client has taken the
    one before.  A piece that fails to render, or a client that takes nothing for
    ``timeout_s``, resets the connection: the client sees a broken body (no last chunk, or
    a reset where HTTP/1.0 would take a close for the end), never a complete-looking wrong
    one.  False if the connection was reset."""
    assert response.stream is not None
    pending: Future[bytes | None] | None = None
    try:
        while True:
            pending = pool.submit(next_batch, response.stream)
            try:
                batch = await asyncio.wrap_future(pending)
            except Exception:
                log.exception("rendering a streamed response failed")
                sink.reset()
                return False
            pending = None
            if batch is None:
                break
            sink.write(b"%x\r\n%s\r\n" % (len(batch), batch) if chunked else batch)
            try:
                async with asyncio.timeout(timeout_s):
                    await sink.drain()
            except (TimeoutError, OSError):
                sink.reset()
                return False
    finally:
        if pending is not None and not pending.done():
            # Cancelled (the server stops) while a batch renders: close it once that
            # batch is done, on its thread; a running generator cannot be closed.
            pending.add_done_callback(lambda _: close_stream(response))
        else:
            close_stream(response)
    if chunked:
        sink.write(b"0\r\n\r\n")
    return True


def next_batch(stream: Iterator[bytes]) -> bytes | None:
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


def close_stream(response: Response) -> None:
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
