"""Answering: a response as one buffer of bytes, and what is left of it to send.

One write per response: a head and body written apart would meet the client's delayed ACK
and stall each keep-alive request by ~40 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import time
from email.utils import formatdate
from http import HTTPStatus

from exporter import __version__
from exporter.http.app import Response, error_response

SERVER = f"crankshaft-exporter/{__version__}".encode()

Headers = tuple[tuple[str, str], ...]
SIOCOUTQNSD = 0x894B  # Linux (2.6.39 on): bytes in a socket's send queue not yet sent


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


def reset_transport(transport: asyncio.BaseTransport) -> None:
    """Close with a reset, now: unsent data is dropped (nobody waits for a client that does
    not read) and the client cannot take a truncated body for a complete one."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def buffered_bytes(transport: asyncio.WriteTransport, raw: asyncio.WriteTransport) -> int:
    """Bytes of answers waiting in this process: in the connection's transport and, over
    TLS, in the TCP transport under it (``raw``), which holds what the kernel did not take."""
    pending = transport.get_write_buffer_size()
    if raw is not transport:
        pending += raw.get_write_buffer_size()
    return pending


def unsent_bytes(transport: asyncio.WriteTransport, raw: asyncio.WriteTransport) -> int:
    """Bytes of answers the client has not taken: in this process (:func:`buffered_bytes`),
    and in the kernel's send queue not yet sent (SIOCOUTQNSD: a client that reads nothing
    closes its window and leaves them there, up to megabytes of kernel memory a
    connection).  Bytes sent and not yet acknowledged do not count: a client that reads may
    delay its ACK by up to 40 ms, and a close waiting for it (the TLS close_notify is the
    end of a ``Connection: close`` answer) made one TLS scrape in eight 50 ms slower."""
    pending = buffered_bytes(transport, raw)
    sock = raw.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
            pending += struct.unpack("i", queued)[0]
    return pending
