"""TLS on an accepted connection: made cheap until the client speaks, then bounded in time.

asyncio's TLS layer allocates a 256 KiB read buffer per connection the moment it is set up
(``SSLProtocol.max_size``), so 500 connections that only connected cost ~150 MiB.  Here
the layer is set up only once the client's whole ClientHello has arrived; until then the
connection is a bare socket, its reads paused, so a client that sends nothing or half a
ClientHello costs what a plain connection does.  The buffer is made one TLS record (16 KiB
and its overhead), all one read can use.  The handshake has its own deadline, counted
from the first byte.  connection.py watches for the ClientHello; ``client_hello_needs``
says when it is whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from asyncio import sslproto

from exporter.http.webwatch import WebState

log = logging.getLogger(__name__)

SSL_READ_BUFFER = 16 * 1024 + 512  # one TLS record and its overhead
HANDSHAKE_TIMEOUT_S = 5.0  # at most; never more than http.request_timeout
TLS_HANDSHAKE_RECORD = 0x16


def use_lean_ssl_buffers() -> None:
    """Every asyncio TLS connection of this process reads into 16.5 KiB, not 256 KiB (a
    class attribute: asyncio builds its SSLProtocol itself; reads are just smaller)."""
    if getattr(sslproto.SSLProtocol, "max_size", 0) > SSL_READ_BUFFER:
        sslproto.SSLProtocol.max_size = SSL_READ_BUFFER


def client_hello_needs(sock: socket.socket) -> int:
    """The bytes ``sock`` must hold before the client's first TLS record, its ClientHello,
    is here whole; 0 if it is, or if what came is not a TLS record or is the end (the TLS
    layer says so then).  Peeks: the bytes stay for the TLS layer."""
    head = _peek(sock, 5)
    if len(head) == 5 and head[0] == TLS_HANDSHAKE_RECORD:
        need = 5 + int.from_bytes(head[3:5], "big")
        if len(_peek(sock, need)) < need:
            return need
    return 0


def _peek(sock: socket.socket, n: int) -> bytes:
    try:
        return sock.recv(n, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return b""  # a reset: the TLS layer will say so


async def handshake(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                    web: WebState, peer: str, deadline: float) -> asyncio.Transport | None:
    """The handshake (by ``deadline``) and exporter-toolkit's client_allowed_sans: the TLS
    transport that now carries ``protocol``, or None (the TCP connection is closed)."""
    context = web.config.ssl_context
    assert context is not None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(deadline):
            tls = await loop.start_tls(transport, protocol, context, server_side=True)
    except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
        log.debug("TLS handshake with %s failed: %s", peer, e or type(e).__name__)
        transport.abort()
        return None
    assert tls is not None  # start_tls gives None only to a closed loop's caller
    allowed = web.config.tls.client_allowed_sans if web.config.tls is not None else None
    if allowed is not None:
        cert = tls.get_extra_info("peercert") or {}
        sans = {_san(kind, value) for kind, value in cert.get("subjectAltName", ())}
        if not sans & {_san("", v) for v in allowed}:
            log.debug("client certificate of %s has none of client_allowed_sans", peer)
            tls.close()
            return None
    return tls


def _san(kind: str, value: str) -> str:
    """A SAN as exporter-toolkit compares it (IP addresses in their canonical form)."""
    value = value.strip()
    if kind in ("IP Address", ""):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(value))
    return value
