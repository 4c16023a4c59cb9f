"""TLS on an accepted connection: made cheap until the client speaks, then bounded in time.

asyncio's TLS layer allocates a 256 KiB read buffer per connection the moment it is set up
(``SSLProtocol.max_size``), so 500 connections that only connected cost ~150 MiB.  Here
the layer is set up only once the client's first bytes (its ClientHello) have arrived,
until then the connection is a bare socket, its reads paused; the buffer is made 32 KiB,
two TLS records (16 KiB each at most), which is all one read can use.  The handshake has
its own deadline, counted from those first bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
from asyncio import sslproto

from exporter.http.webwatch import WebState

log = logging.getLogger(__name__)

SSL_READ_BUFFER = 32 * 1024
HANDSHAKE_TIMEOUT_S = 5.0  # at most; never more than http.request_timeout


def use_lean_ssl_buffers() -> None:
    """Every asyncio TLS connection of this process reads into 32 KiB, not 256 KiB (a
    class attribute: asyncio builds its SSLProtocol itself; reads are just smaller)."""
    if getattr(sslproto.SSLProtocol, "max_size", 0) > SSL_READ_BUFFER:
        sslproto.SSLProtocol.max_size = SSL_READ_BUFFER


async def first_bytes(writer: asyncio.StreamWriter, deadline: float) -> bool:
    """Wait, reading nothing, until the client has sent something (or closed); False at
    the deadline.  The transport's reads stay paused, so the bytes are left for the TLS
    layer: a duplicate descriptor is watched, since asyncio lets no one else watch the
    transport's own."""
    sock = writer.get_extra_info("socket")
    writer.transport.pause_reading()  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    fd = os.dup(sock.fileno())
    ready: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            async with asyncio.timeout_at(deadline):
                await ready
        except TimeoutError:
            return False
        return True
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def handshake(writer: asyncio.StreamWriter, web: WebState, peer: str,
                    timeout_s: float) -> bool:
    """The handshake (within ``timeout_s``) and exporter-toolkit's client_allowed_sans."""
    context = web.config.ssl_context
    assert context is not None
    try:
        async with asyncio.timeout(timeout_s):
            await writer.start_tls(context)
    except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
        log.debug("TLS handshake with %s failed: %s", peer, e or type(e).__name__)
        return False
    tls = web.config.tls
    if tls is not None and tls.client_allowed_sans is not None:
        cert = writer.get_extra_info("peercert") or {}
        sans = {_san(kind, value) for kind, value in cert.get("subjectAltName", ())}
        if not sans & {_san("", v) for v in tls.client_allowed_sans}:
            log.debug("client certificate of %s has none of client_allowed_sans", peer)
            return False
    return True


def _san(kind: str, value: str) -> str:
    """A SAN as exporter-toolkit compares it (IP addresses in their canonical form)."""
    value = value.strip()
    if kind in ("IP Address", ""):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(value))
    return value
