"""Reading one request: bytes in, a :class:`Request` (or a refusal) out, no sockets.

The HTTP/1.1 grammar is h11's (strict where RFC 9112 says MUST: one space between the
request-line's parts, no bare CR, no NUL, one Host on HTTP/1.1, no Transfer-Encoding but
chunked, agreeing Content-Lengths).  Around it, what this exporter adds:

- answers a client can act on before h11 sees a byte: 414 for a request line over
  ``MAX_LINE``, 505 for HTTP/0.9, 400 at once for a TLS ClientHello on the plain port;
- where h11 is lenient, Go's net/http is not and neither is this: a Host with characters no
  host name has, control characters in any header value, over ``MAX_HEADERS`` headers;
- the body rules of the one route that takes a body: Content-Length only (411 for chunked
  or none), at most ``max_body_bytes`` (413 before a byte of it is read).

A fresh h11 connection reads each request; the bytes after it (a pipelined request) start
the next one.  The answer is written by the server, not by h11: one buffer per response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11

from exporter.http.app import Request

MAX_LINE = 65536  # the request line, as http.server and Go (1 MiB for all of the head)
MAX_HEADERS = 100
MAX_HEAD_BYTES = 256 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Bytes a Host value may hold (as Go's httpguts.ValidHostHeader: a reg-name, an IP literal
# in brackets, a port, percent-escapes).
_HOST_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        b"!$%&'()*+,-.:;=[]_~")  # fmt: skip
# RFC 9110 5.5: a field value has no control characters but horizontal tab.
_CONTROL = frozenset(range(0x20)) - {0x09} | {0x7F}
_FOLDED = re.compile(rb"\n[ \t]")
_HTTP09 = re.compile(rb"GET [\x21-\x7e]+")


class Reject(Exception):
    """The request is refused: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Parsed:
    """A whole request, and how the connection goes on after its answer."""

    request: Request
    keep_alive: bool
    http10: bool


class RequestParser:
    """One connection's requests, one after the other.  ``feed`` bytes as they arrive;
    ``next_request`` gives a request once all of it is here (None until then) or raises
    :class:`Reject`.  ``wants_continue`` turns True once a body is awaited that the client
    will only send after ``100 Continue``."""

    def __init__(self, max_body_bytes: int, client_ip: str = "") -> None:
        self.max_body_bytes = max_body_bytes
        self.client_ip = client_ip
        self.wants_continue = False
        self._pending = bytearray()  # before the request line is whole: the pre-checks
        self._h11: h11.Connection | None = None
        self._head: Parsed | None = None  # a POST whose body is being read
        self._body: list[bytes] = []
        self._skipped_empty = False
        self._head_bytes = bytearray()  # what h11 was fed until the head was whole

    @property
    def idle(self) -> bool:
        """No byte of a next request has arrived."""
        return self._h11 is None and not self._pending

    def feed(self, data: bytes) -> None:
        if self._h11 is None:
            self._pending += data
        else:
            if self._head is None:
                self._head_bytes += data
            self._h11.receive_data(data)

    def next_request(self) -> Parsed | None:
        if self._h11 is None and not self._start():
            return None
        assert self._h11 is not None
        try:
            if self._head is None:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return None
                assert isinstance(event, h11.Request), event
                self._check_raw_head()
                self._head = parsed = self._check_head(event)
                if parsed.request.method != "POST":
                    return self._finish()  # any body it has is not read: the answer closes
                self._check_body(parsed)
            return self._read_body()
        except h11.RemoteProtocolError as e:
            raise Reject(e.error_status_hint, _h11_message(e)) from None
        except ValueError:  # a Content-Length too long for int() in older h11
            raise Reject(400, "bad Content-Length") from None

    # --- the request line, before h11 --------------------------------------------------------

    def _start(self) -> bool:
        """True once the request line is here and passed the checks h11 does not make."""
        pending = self._pending
        if pending[:1] == b"\x16":  # a TLS ClientHello record: say so now, not at the deadline
            raise Reject(400, "this port serves plain HTTP, not TLS")
        end = pending.find(b"\n", 0, MAX_LINE + 2)
        if end < 0:
            if len(pending) > MAX_LINE:
                raise Reject(414, f"request line longer than {MAX_LINE} bytes")
            return False
        line = bytes(pending[:end]).removesuffix(b"\r")
        if not line and not self._skipped_empty:  # RFC 9112 2.2: one empty line is ignored
            self._skipped_empty = True
            del pending[: end + 1]
            return self._start() if pending else False
        if _HTTP09.fullmatch(line):
            raise Reject(505, "HTTP/0.9 is not supported; send an HTTP/1.1 request")
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._head_bytes = bytearray(pending)
        self._h11.receive_data(bytes(pending))
        pending.clear()
        return True

    # --- the head ------------------------------------------------------------------------------

    def _check_raw_head(self) -> None:
        """The head's size (h11 limits only a head still arriving), and folded lines: RFC
        9112 5.2 lets a server join them (h11 does) or refuse them; as Go, this one
        refuses, since a proxy in front may have read them otherwise."""
        assert self._h11 is not None
        head_end = len(self._head_bytes) - len(self._h11.trailing_data[0])
        head = self._head_bytes[:head_end]
        self._head_bytes = bytearray()
        if head_end > MAX_HEAD_BYTES:
            raise Reject(431, f"headers larger than {MAX_HEAD_BYTES} bytes")
        if _FOLDED.search(head):
            raise Reject(400, "folded header lines are not accepted")

    def _check_head(self, event: h11.Request) -> Parsed:
        version = event.http_version
        if version not in (b"1.0", b"1.1"):
            text = version.decode("ascii", "replace")
            raise Reject(505, f"HTTP/{text} is not supported; send HTTP/1.1")
        items = list(event.headers)
        if len(items) > MAX_HEADERS:
            raise Reject(431, f"more than {MAX_HEADERS} header lines")
        headers: dict[str, str] = {}
        for raw_name, raw_value in items:
            name = raw_name.decode("ascii")
            if not _CONTROL.isdisjoint(raw_value):
                raise Reject(400, f"control character in the {name} header")
            if name == "host" and not _HOST_BYTES.issuperset(raw_value):
                raise Reject(400, "the Host header is not a host name")
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        method = event.method.decode("ascii")
        if method not in METHODS:
            raise Reject(501, f"method {method[:20]!r} is not implemented")
        http10 = version == b"1.0"
        connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "keep-alive" in connection if http10 else "close" not in connection
        if method != "POST" and ("content-length" in headers or "transfer-encoding" in headers):
            keep = False  # a body nobody reads would be parsed as the next request
        target = event.target.decode("ascii")
        path, _, query = target.partition("?")
        request = Request(method, path, query, headers, self.client_ip)
        return Parsed(request, keep, http10)

    def _check_body(self, parsed: Parsed) -> None:
        headers = parsed.request.headers
        if "transfer-encoding" in headers:
            raise Reject(411, "send the body with a Content-Length, not chunked")
        text = headers.get("content-length")
        if text is None:
            raise Reject(411, "a Content-Length header is required")
        limit = self.max_body_bytes
        if len(text) > 15 or int(text) > limit:  # h11 made sure it is digits
            raise Reject(413, f"body of {text[:20]} bytes is over the limit of {limit} bytes")
        self.wants_continue = (not parsed.http10 and int(text) > 0
                               and headers.get("expect", "").lower() == "100-continue")

    # --- the body --------------------------------------------------------------------------

    def _read_body(self) -> Parsed | None:
        assert self._h11 is not None
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Data):
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return self._finish()

    def _finish(self) -> Parsed:
        """The request is whole: what came after it starts the next one."""
        assert self._h11 is not None and self._head is not None
        parsed, self._head = self._head, None
        parsed.request.body = b"".join(self._body)
        self._body = []
        self.wants_continue = False
        self._skipped_empty = False
        if parsed.keep_alive:
            self._pending = bytearray(self._h11.trailing_data[0])
        self._h11 = None
        return parsed


def _h11_message(error: h11.RemoteProtocolError) -> str:
    """h11's reason, without the raw bytes it quotes (they could be anything)."""
    text = str(error).split(":", 1)[0] if ": bytearray(" in str(error) else str(error)
    return text[:200] or "malformed request"
