"""Malformed requests, as raw bytes, and the statuses each may get (RFC 9112/9110; Go's
net/http answers the same bytes with these statuses).  Each ends in a well-formed request
that must never be answered: the connection closes after the refusal.

Shared by the parser's unit tests and the corpus test against the running daemon.
"""

from __future__ import annotations

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
_BODY = b'{"memory_mb": 1}'


def _post(extra: bytes, body: bytes = _BODY) -> bytes:
    return (b"POST /metrics/record HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra + b"\r\n" + body)


MALFORMED: list[tuple[str, bytes, tuple[int, ...]]] = [
    # Transfer-Encoding other than chunked beside a Content-Length: the smuggling shape.
    ("te-gzip-and-length", _post(b"Transfer-Encoding: gzip\r\nContent-Length: 16\r\n")
     + SMUGGLED, (501,)),
    ("te-identity-and-length", _post(b"Transfer-Encoding: identity\r\nContent-Length: 16\r\n")
     + SMUGGLED, (501,)),
    ("te-chunked-and-length", _post(b"Transfer-Encoding: chunked\r\nContent-Length: 16\r\n",
                                    b"0\r\n\r\n") + SMUGGLED, (400, 411)),
    ("te-twice", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                       b"0\r\n\r\n") + SMUGGLED, (400, 501)),
    ("differing-lengths", _post(b"Content-Length: 16\r\nContent-Length: 23\r\n") + SMUGGLED,
     (400,)),
    ("length-list", _post(b"Content-Length: 16, 23\r\n") + SMUGGLED, (400,)),
    ("no-host", b"GET /metrics HTTP/1.1\r\n\r\n" + SMUGGLED, (400,)),
    ("two-hosts", b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, (400,)),
    ("host-control-char", b"GET /metrics HTTP/1.1\r\nHost: a\x01b\r\n\r\n" + SMUGGLED, (400,)),
    ("host-del", b"GET /metrics HTTP/1.1\r\nHost: a\x7fb\r\n\r\n" + SMUGGLED, (400,)),
    ("host-space", b"GET /metrics HTTP/1.1\r\nHost: a b\r\n\r\n" + SMUGGLED, (400,)),
    ("host-slash", b"GET /metrics HTTP/1.1\r\nHost: a/b\r\n\r\n" + SMUGGLED, (400,)),
    ("nul-in-value", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED,
     (400,)),
    ("bare-cr-in-value", b"GET /metrics HTTP/1.1\r\nHost: x\rTransfer-Encoding: chunked\r\n\r\n"
     + SMUGGLED, (400,)),
    ("control-char-in-value", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n"
     + SMUGGLED, (400,)),
    ("space-before-colon", b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n" + SMUGGLED, (400,)),
    ("obs-fold", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + SMUGGLED,
     (400,)),
    ("line-split-on-bare-cr", b"GET\r/metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("line-split-on-0x1f", b"GET\x1f/metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("line-split-on-0x0b", b"GET\x0b/metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("line-split-on-0x0c", b"GET /metrics\x0cHTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("line-split-on-0xa0", b"GET\xa0/metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("line-split-on-tab", b"GET\t/metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("double-space", b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("version-01.01", b"GET /metrics HTTP/01.01\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("version-1.1.1", b"GET /metrics HTTP/1.1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
    ("version-2.0", b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n" + SMUGGLED, (505,)),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED, (505,)),
    ("http-0.9", b"GET /metrics\r\n", (505,)),
    ("long-uri", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414,)),
    ("many-headers", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n" + SMUGGLED, (431,)),
    ("huge-head", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(40)) + b"\r\n", (431,)),
    ("unknown-method", b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (501,)),
    ("non-ascii-target", b"GET /metrics\xff HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, (400,)),
]
