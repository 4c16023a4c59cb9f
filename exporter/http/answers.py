"""Answering: a response as one buffer of bytes, and the ways a connection ends after it.

One write per response: a head and body written apart would meet the client's delayed ACK
and stall each keep-alive request by ~40 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus

from exporter import __version__
from exporter.http.app import Response, error_response

SERVER = f"crankshaft-exporter/{__version__}".encode()
LINGER_S = 2.0  # after an error answer, unread input is drained this long before closing
LINGER_BYTES = 1 << 20
WRITE_CHUNK = 64 * 1024
DELIVERY_POLL_S = 0.05

Headers = tuple[tuple[str, str], ...]


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


class Answers:
    def __init__(self) -> None:
        self._date = _Date()
        self._cached_408: tuple[object, bytes] = (None, b"")

    def render(self, status: int, response: Response, close: bool, head_only: bool,
               extra: Headers, framing: bytes | None = None) -> bytes:
        """Status line, headers and body.  ``extra`` are the web config's headers (the
        response's own win); ``framing`` replaces the Content-Length line of a streamed
        body (b"" leaves it out)."""
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

    def error(self, status: int, message: str, extra: Headers,
              headers: dict[str, str] | None = None) -> bytes:
        """A JSON error that closes the connection."""
        return self.render(status, error_response(status, message, headers), True, False,
                           extra)

    def timeout(self, timeout_s: float, extra: Headers) -> bytes:
        """The 408, made once a second at most: a slowloris crowd started together times
        out together, and each costs one prepared write."""
        key = (timeout_s, extra, self._date())
        if self._cached_408[0] != key:
            message = f"the request did not arrive within {timeout_s:g} s"
            self._cached_408 = (key, self.error(408, message, extra))
        return self._cached_408[1]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, now: unsent data is dropped (nobody waits for a client that does
    not read) and the client cannot take a truncated body for a complete one."""
    reset_transport(writer.transport)


def reset_transport(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def buffered_bytes(writer: asyncio.StreamWriter,
                   raw: asyncio.BaseTransport | None = None) -> int:
    """Bytes of answers waiting in this process: in the writer's transport and, over TLS,
    in the TCP transport under it (``raw``), which holds what the kernel did not take."""
    pending = writer.transport.get_write_buffer_size()
    if raw is not None and raw is not writer.transport:
        pending += raw.get_write_buffer_size()  # type: ignore[attr-defined]
    return pending


def unsent_bytes(writer: asyncio.StreamWriter, raw: asyncio.BaseTransport | None = None) -> int:
    """Bytes of answers the client has not taken: in this process (:func:`buffered_bytes`),
    and in the kernel's send queue not yet acknowledged (SIOCOUTQ; a client that reads
    nothing leaves them there, up to megabytes of kernel memory a connection)."""
    pending = buffered_bytes(writer, raw)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            pending += struct.unpack("i", queued)[0]
    return pending


async def await_delivery(writer: asyncio.StreamWriter, timeout_s: float,
                         raw: asyncio.BaseTransport | None = None) -> bool:
    """Wait until the client has taken everything written; reset it if it has not within
    ``timeout_s``.  Looks every 50 ms, only while something is still unsent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while unsent_bytes(writer, raw) > 0:
        if loop.time() >= deadline or writer.transport.is_closing():
            reset(writer)
            return False
        await asyncio.sleep(DELIVERY_POLL_S)
    return True


async def write_answer(writer: asyncio.StreamWriter, data: bytes, timeout_s: float,
                       raw: asyncio.BaseTransport | None,
                       holding: Callable[[int], None]) -> bool:
    """Write an answer; ``holding(n)`` is told the bytes of it still waiting in this
    process.  Over plain TCP, and up to WRITE_CHUNK over TLS, it goes in one write (what
    the kernel does not take waits in the transport, counted).  A larger answer over TLS
    goes a piece at a time as the client takes them: OpenSSL's output buffer keeps the
    largest size it ever held, for the life of the connection.  A client that takes
    nothing for ``timeout_s`` is reset; False if it was."""
    tls = raw is not None and raw is not writer.transport
    if len(data) <= WRITE_CHUNK or not tls:
        writer.write(data)
        holding(buffered_bytes(writer, raw))
        return await drain_or_reset(writer, timeout_s, raw)
    for start in range(0, len(data), WRITE_CHUNK):
        writer.write(data[start:start + WRITE_CHUNK])
        holding(len(data) - start - WRITE_CHUNK + buffered_bytes(writer, raw))
        try:
            async with asyncio.timeout(timeout_s):
                await writer.drain()
        except (TimeoutError, OSError):
            reset(writer)
            return False
    holding(buffered_bytes(writer, raw))
    return await drain_or_reset(writer, timeout_s, raw)


async def drain_or_reset(writer: asyncio.StreamWriter, timeout_s: float,
                         raw: asyncio.BaseTransport | None = None) -> bool:
    """Wait until the kernel has taken what was written; a client that does not read it
    within ``timeout_s`` is reset (a graceful close would wait for it, forever).  False if
    the connection is gone."""
    if buffered_bytes(writer, raw) == 0:
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await writer.drain()
    except (TimeoutError, OSError):
        reset(writer)
        return False
    return True


async def linger(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                 unread_input: bool) -> None:
    """End a connection whose last answer is written.  Closing with unread input makes the
    kernel send a reset, which can destroy the answer before the client reads it: so
    half-close, then read and drop what the client still sends for a moment.  Over TLS
    there is no half-close; a client that sent nothing more is closed at once (the close
    sends close_notify, which it reads as the end), else its input is drained first."""
    if writer.can_write_eof():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
    elif not unread_input and not reader._buffer and not reader.at_eof():  # type: ignore[attr-defined]
        return
    drained = 0
    with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
        async with asyncio.timeout(LINGER_S):
            while drained < LINGER_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                drained += len(chunk)
