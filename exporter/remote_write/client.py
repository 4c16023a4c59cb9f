"""One receiver's HTTP client: a kept-alive connection, TLS and credentials as configured.

``http.client`` rather than ``urllib``: one connection is reused across sends (a TLS
handshake per batch is costly on a cellular link), and every status, 4xx and 5xx alike,
comes back as a value for the sender to judge rather than as an exception.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from exporter import __version__
from exporter.config.model import RemoteWriteConfig
from exporter.remote_write import protocol

MAX_ERROR_BODY = 4096  # what a refusal says is logged; more is never read


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    message: str  # the start of the body, one line, for logs and the refusal test


class Client:
    def __init__(self, config: RemoteWriteConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._context: ssl.SSLContext | None = None  # made at the first connection
        self._conn: http.client.HTTPConnection | None = None
        self._headers = {
            "Content-Type": protocol.CONTENT_TYPE,
            "Content-Encoding": protocol.CONTENT_ENCODING,
            protocol.VERSION_HEADER[0]: protocol.VERSION_HEADER[1],
            "User-Agent": f"crankshaft-exporter/{__version__}",
        }
        auth = _authorization(config)
        if auth is not None:
            self._headers["Authorization"] = auth

    def send(self, body: bytes) -> Reply:
        """POST one compressed WriteRequest; raises OSError when the receiver is unreachable
        (refused, reset, timed out, TLS failure)."""
        for attempt in (1, 2):
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=body, headers=self._headers)
                response = conn.getresponse()
                data = response.read(MAX_ERROR_BODY) if response.status >= 300 else b""
                if response.status < 300:
                    response.read()
                if response.will_close or response.status >= 300:
                    self.close()
                text = data.decode("utf-8", "replace").strip().replace("\n", " ")
                return Reply(response.status, text)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the receiver closed: one fresh try
                if attempt == 2:
                    raise
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise OSError(str(e) or type(e).__name__) from None
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            timeout = self.config.remote_timeout
            if self._https:
                if self._context is None:  # files read when used: a missing one is an OSError
                    self._context = _tls_context(self.config)
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _tls_context(config: RemoteWriteConfig) -> ssl.SSLContext:
    tls = config.tls_config
    context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    if tls is not None:
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return context


def _authorization(config: RemoteWriteConfig) -> str | None:
    if config.basic_auth is not None:
        user, password = config.basic_auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return f"Basic {token}"
    if config.authorization is not None:
        kind, credentials = config.authorization
        return f"{kind} {credentials}"
    return None
