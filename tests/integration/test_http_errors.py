"""Bad input against the real daemon: always a JSON ``{"error": ...}`` with a 4xx status, never a
5xx or a traceback, and never a change to what was recorded.

One daemon serves the whole module.  It is fed BASELINE once; after every test an autouse
fixture waits for the next collection tick (so pushed-but-pending gauges would have landed)
and checks that the recorded data is still exactly BASELINE.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Response, RunningDaemon, start_daemon
from tests.helpers import poll, read_until_closed

MAX_BODY = 1_048_576

# The daemon measures its own memory and CPU, so a push of memory_mb is refused (409): the
# baseline holds only what no source measures.
BASELINE: dict[str, Any] = {
    "active_connections": 7,
    "total_connections": 42,
    "extensions": {"media-player": "running", "phone": "stopped"},
    "latency_ms": {"/a": [10.0, 20.0, 30.0], "/api/settings/get": [15.2, 18.4]},
}


# --- helpers -----------------------------------------------------------------------------


@dataclass
class Raw:
    """A response read off a socket; ``status`` is None when there was no HTTP status line."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def makefile(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self._file


def raw_request(d: RunningDaemon, data: bytes, timeout: float = 15.0) -> Raw:
    """Send bytes as they are, read until the server closes, parse what came back."""
    with socket.create_connection((d.host, d.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = read_until_closed(sock)
    method = data.split(b" ", 1)[0].decode("latin-1")
    response = http.client.HTTPResponse(_Bytes(received), method=method)  # type: ignore[arg-type]
    try:
        response.begin()
    except (http.client.HTTPException, OSError):
        return Raw(None, raw=received)
    body = response.read()
    return Raw(response.status, {k.lower(): v for k, v in response.getheaders()}, body, received)


def get_json(d: RunningDaemon, path: str) -> Any:
    r = d.request(path)
    assert r.status == 200, (path, r.status, r.body[:300])
    return r.json()


def assert_json_error(r: Raw | Response, expected: int | tuple[int, ...],
                      mentions: str | None = None) -> str:
    """``r`` is a JSON ``{"error": ...}`` with an expected status; its message is returned."""
    expected = (expected,) if isinstance(expected, int) else expected
    assert r.status in expected, (r.status, r.body[:300])
    assert r.headers.get("content-type", "").split(";")[0] == "application/json", r.headers
    assert b"Traceback" not in r.body
    doc = json.loads(r.body)
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert isinstance(doc["error"], str) and doc["error"]
    if mentions is not None:
        assert mentions in doc["error"], doc["error"]
    return doc["error"]


def recorded(d: RunningDaemon) -> dict[str, Any]:
    """What the ingest can change, in a form that is stable across collection ticks."""
    doc = get_json(d, "/metrics")
    return {
        "latency_breakdown": doc["latency_breakdown"],
        "extensions": doc["extensions"],
        # Only pushes write these two series (the daemon samples itself: no connections).
        "websocket_active": [s["value"] for s in doc["websocket_active"]["samples"]],
        "websocket_total": [s["value"] for s in doc["websocket_total"]["samples"]],
        "latency": [s["value"] for s in doc["latency"]["samples"]],
        # The measured RSS is many MiB: a value below 1 can only be a pushed one.
        "pushed_memory": [s["value"] for s in doc["memory"]["samples"] if s["value"] < 1.0],
        "histogram_counts": histogram_counts(d),
    }


def histogram_counts(d: RunningDaemon) -> dict[str, float]:
    text = d.request("/metrics/prometheus").text
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("crankshaft_request_duration_seconds_count{")
    }


def newest_tick(d: RunningDaemon) -> int:
    return get_json(d, "/metrics?last_n=1")["memory"]["samples"][-1]["timestamp"]


def post(d: RunningDaemon, body: bytes, content_type: str = "application/json") -> Any:
    return d.request("/metrics/record", "POST", body, {"Content-Type": content_type})


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    d = start_daemon(tmp_path_factory.mktemp("errors"), "--interval", "0.05")
    try:
        r = d.post_json("/metrics/record", BASELINE)
        assert r.status == 200, r.body
        poll(lambda: get_json(d, "/metrics"),
             lambda m: m["websocket_active"]["sample_count"] == 1
             and m["memory"]["sample_count"] >= 2,
             "the baseline batch to land")
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def baseline(svc: RunningDaemon) -> dict[str, Any]:
    state = recorded(svc)
    assert state["websocket_active"] == [7] and state["websocket_total"] == [42]
    assert state["pushed_memory"] == []
    assert state["latency_breakdown"]["/a"]["count"] == 3
    assert state["extensions"] == BASELINE["extensions"]
    assert state["histogram_counts"] == {"/a": 3.0, "/api/settings/get": 2.0}
    return state


@pytest.fixture(autouse=True)
def intact(svc: RunningDaemon, baseline: dict[str, Any]) -> Iterator[None]:
    yield
    # A tick must pass so that gauges a bad batch might have left pending are recorded.
    poll(lambda: svc.request("/healthz").status, lambda s: s == 200, "the daemon to answer")
    before = newest_tick(svc)
    poll(lambda: newest_tick(svc), lambda t: t != before, "the next collection tick")
    assert recorded(svc) == baseline
    assert "Traceback" not in svc.log()


# --- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nope", "/metrics/", "/metrics/summary/extra", "/METRICS", "/metrics/record/x",
        "/%ff%fe", "/metrics/%00", "/%E2%82", "/metrics%2Fsummary", "/%C0%AE%C0%AE/etc/passwd",
        "/%C3%BCber", "/metrics/%F0%9F%92%A9", "/%ED%A0%80",
    ],
)
def test_unknown_path_is_404_json(svc: RunningDaemon, path: str) -> None:
    r = svc.request(path)
    assert_json_error(r, 404)


def test_non_utf8_bytes_in_path_and_query(svc: RunningDaemon) -> None:
    # RFC 9112 3.2: the request target is ASCII; raw bytes above 0x7f are a bad request
    # line, their percent-encoded form an unknown path or a bad parameter.
    r = raw_request(svc, b"GET /metrics/\xff\xfe\x80 HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
    assert_json_error(r, 400, "request line")
    r = raw_request(svc, b"GET /metrics?last_n=\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close"
                         b"\r\n\r\n")
    assert_json_error(r, 400, "request line")
    r = raw_request(svc, b"GET /metrics/%ff%fe%80 HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
    assert_json_error(r, 404)
    r = raw_request(svc, b"GET /metrics?last_n=%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close"
                         b"\r\n\r\n")
    assert_json_error(r, 400, "last_n")
    r = raw_request(svc, b"GET /metrics/csv?last_n=%ff%00 HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
    assert_json_error(r, 400, "last_n")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/metrics", {"GET", "HEAD"}),
        ("GET", "/metrics/record", {"POST"}),
        ("PUT", "/metrics/record", {"POST"}),
        ("PUT", "/metrics", {"GET", "HEAD"}),
        ("POST", "/metrics", {"GET", "HEAD"}),
        ("PATCH", "/metrics/summary", {"GET", "HEAD"}),
        ("DELETE", "/metrics/alerts", {"GET", "HEAD"}),
        ("OPTIONS", "/healthz", {"GET", "HEAD"}),
        ("POST", "/openapi.yaml", {"GET", "HEAD"}),
    ],
)
def test_wrong_method_is_405_with_allow(svc: RunningDaemon, method: str, path: str,
                                        allow: set[str]) -> None:
    body = b'{"memory_mb": 1}' if method in ("POST", "PUT", "PATCH") else None
    headers = {"Content-Type": "application/json"} if body else {}
    r = svc.request(path, method, body, headers)
    assert_json_error(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allow


def test_head_on_a_post_route_is_405_without_body(svc: RunningDaemon) -> None:
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=15)
    try:
        conn.request("HEAD", "/metrics/record")
        r = conn.getresponse()
        assert r.status == 405
        assert r.getheader("Allow") == "POST"
        assert r.read() == b""
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/metrics", "/metrics/prometheus", "/metrics/csv",
                                  "/metrics/summary", "/healthz"])
def test_head_gives_headers_without_body(svc: RunningDaemon, path: str) -> None:
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=15)
    try:
        conn.request("HEAD", path)
        r = conn.getresponse()
        assert r.status == 200
        assert int(r.getheader("Content-Length")) > 0
        assert r.getheader("Content-Type")
        assert r.read() == b""
        # No stray body bytes on the wire: the same connection serves the next request.
        conn.request("GET", "/healthz")
        follow = conn.getresponse()
        assert follow.status == 200
        assert json.loads(follow.read())["status"] == "ok"
    finally:
        conn.close()


# --- last_n ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/metrics", "/metrics/csv"])
@pytest.mark.parametrize(
    "query",
    [
        "last_n=abc", "last_n=-5", "last_n=-2", "last_n=1.5", "last_n=1&last_n=2",
        "last_n=" + "9" * 10_000, "last_n=1e3", "last_n=0x10", "last_n=%ff",
        "last_n=%EF%BC%91", "last_n=%00", "last_n=%20",
    ],
    ids=lambda q: q[:20],
)
def test_bad_last_n_is_400(svc: RunningDaemon, route: str, query: str) -> None:
    r = svc.request(f"{route}?{query}")
    message = assert_json_error(r, 400, "last_n")
    assert len(message) < 300, "the message echoes the whole parameter"


# --- POST /metrics/record: the body --------------------------------------------------------


def cases(table: list[tuple[str, bytes, str]]) -> list[Any]:
    """A table of (name, body, what the error mentions) as pytest parameters named by it."""
    return [pytest.param(body, mentions, id=name) for name, body, mentions in table]


FIELD_ERRORS: list[tuple[str, bytes, str]] = [
    ("1e999", b'{"memory_mb": 1e999}', "memory_mb"),
    ("negative memory", b'{"memory_mb": -1}', "memory_mb"),
    ("negative cpu", b'{"cpu_percent": -0.5}', "cpu_percent"),
    ("negative connections", b'{"active_connections": -3}', "active_connections"),
    ("negative latency", b'{"latency_ms": {"/x": [1, -2]}}', "latency_ms"),
    ("string memory", b'{"memory_mb": "12"}', "memory_mb"),
    ("string latency", b'{"latency_ms": {"/x": "5"}}', "latency_ms"),
    ("bool count", b'{"active_connections": true}', "active_connections"),
    ("bool latency", b'{"latency_ms": {"/x": [false]}}', "latency_ms"),
    ("null total", b'{"total_connections": null}', "total_connections"),
    ("fractional count", b'{"total_connections": 1.5}', "total_connections"),
    ("object memory", b'{"memory_mb": {"value": 1}}', "memory_mb"),
    ("nested latency list", b'{"latency_ms": {"/x": [[1]]}}', "latency_ms"),
    ("latency not object", b'{"latency_ms": [1, 2]}', "latency_ms"),
    ("unknown field", b'{"memory_mb": 1, "uptime": 5}', "uptime"),
    ("bad extension status", b'{"extensions": {"nav": "exploded"}}', "extensions"),
    ("extension status not string", b'{"extensions": {"nav": 1}}', "extensions"),
    ("extensions not object", b'{"extensions": ["nav"]}', "extensions"),
    ("lone surrogate endpoint", b'{"latency_ms": {"\\ud800": 1}}', "latency_ms"),
    ("low surrogate endpoint", b'{"latency_ms": {"a\\udfffb": 1}}', "latency_ms"),
    ("NUL endpoint", b'{"latency_ms": {"a\\u0000b": 1}}', "latency_ms"),
    ("newline endpoint", b'{"latency_ms": {"a\\nb": 1}}', "latency_ms"),
    ("escape-sequence endpoint", b'{"latency_ms": {"\\u001b[31mred": 1}}', "latency_ms"),
    ("DEL extension id", b'{"extensions": {"x\\u007f": "running"}}', "extensions"),
    ("empty endpoint", b'{"latency_ms": {"": 1}}', "latency_ms"),
    ("endpoint of 257", b'{"latency_ms": {"' + b"e" * 257 + b'": 1}}', "latency_ms"),
    ("extension id of 129", b'{"extensions": {"' + b"x" * 129 + b'": "running"}}',
     "extensions"),
]


@pytest.mark.parametrize(("body", "field_name"), cases(FIELD_ERRORS))
def test_invalid_field_is_400_naming_it(svc: RunningDaemon, body: bytes, field_name: str) -> None:
    message = assert_json_error(post(svc, body), 400, field_name)
    assert len(message) < 400


DOCUMENT_ERRORS: list[tuple[str, bytes, str]] = [
    ("malformed", b'{"memory_mb": 1', "JSON"),
    ("trailing garbage", b'{"memory_mb": 1} {}', "JSON"),
    ("single quotes", b"{'memory_mb': 1}", "JSON"),
    ("NaN", b'{"memory_mb": NaN}', "NaN"),
    ("Infinity", b'{"cpu_percent": Infinity}', "Infinity"),
    ("-Infinity in list", b'{"latency_ms": {"/x": [1, -Infinity]}}', "Infinity"),
    ("5000 digits", b'{"total_connections": ' + b"9" * 5000 + b"}", "total_connections"),
    ("deep nesting", b"[" * 100_000, "JSON"),
    ("deep object nesting", b'{"a":' * 50_000, "JSON"),
    ("empty object", b"{}", "empty"),
    ("array", b"[]", "object"),
    ("number", b"5", "object"),
    ("string", b'"memory_mb"', "object"),
    ("null", b"null", "object"),
    ("empty body", b"", "JSON"),
    ("not UTF-8", b'{"extensions": {"\xff\xfe": "running"}}', "UTF-8"),
    ("UTF-16", '{"memory_mb": 1}'.encode("utf-16"), "UTF-8"),
    ("BOM", b'\xef\xbb\xbf{"memory_mb": 1}', "JSON"),
]


@pytest.mark.parametrize(("body", "mentions"), cases(DOCUMENT_ERRORS))
def test_invalid_document_is_400(svc: RunningDaemon, body: bytes, mentions: str) -> None:
    message = assert_json_error(post(svc, body), 400, mentions)
    assert len(message) < 400


@pytest.mark.parametrize(
    ("body", "field_name"),
    [(b'{"memory_mb": NaN}', "memory_mb"),
     (b'{"cpu_percent": Infinity}', "cpu_percent"),
     (b'{"total_connections": ' + b"9" * 5000 + b"}", "total_connections")],
    ids=["NaN", "Infinity", "5000 digits"],
)
def test_number_literal_errors_name_the_field(svc: RunningDaemon, body: bytes,
                                              field_name: str) -> None:
    r = post(svc, body)
    message = assert_json_error(r, 400, field_name)
    assert "sys." not in message


PARTLY_VALID: list[dict[str, Any]] = [
    {"latency_ms": {"/a": [5.0, 6.0], "/b": [1.0, -1.0]}},
    {"latency_ms": {"/a": [5.0], "/api/settings/get": 7.0, "/c\u0001": 2.0}},
    {"active_connections": 77, "total_connections": 78,
     "extensions": {"nav": "running", "bad": "exploded"}},
    {"memory_mb": 0.5, "extensions": {"phone": "running"}, "latency_ms": {"/a": [1.0, "2"]}},
    {"latency_ms": {"/a": [1.0, 2.0]}, "extensions": {"media-player": "crashed"},
     "bogus": 1},
    {"total_connections": 999, "latency_ms": {"/a": 3.0}, "cpu_percent": "high"},
    {"active_connections": 12, "latency_ms": {"/a": [1.0] * 1000 + [True]}},
]


@pytest.mark.parametrize("batch", PARTLY_VALID, ids=[f"batch{i}" for i in range(len(PARTLY_VALID))])
def test_partly_valid_batch_applies_nothing(svc: RunningDaemon, baseline: dict[str, Any],
                                            batch: dict[str, Any]) -> None:
    r = svc.post_json("/metrics/record", batch)
    assert_json_error(r, 400)
    # Latency and extensions apply at once, gauges at the next tick (checked by `intact`).
    doc = get_json(svc, "/metrics")
    assert doc["latency_breakdown"] == baseline["latency_breakdown"]
    assert doc["latency_breakdown"]["/a"]["count"] == 3
    assert doc["extensions"] == baseline["extensions"]


# --- POST /metrics/record: the framing ----------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/jsonx", "application/json-patch+json", "text/json", "", "application"],
)
def test_wrong_content_type_is_415(svc: RunningDaemon, content_type: str) -> None:
    r = post(svc, b'{"memory_mb": 1}', content_type)
    assert_json_error(r, 415, "application/json")


def test_missing_content_type_is_415(svc: RunningDaemon) -> None:
    body = b'{"memory_mb": 1}'
    r = raw_request(svc, b"POST /metrics/record HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert_json_error(r, 415)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_type_variants_are_accepted(svc: RunningDaemon, content_type: str) -> None:
    # An empty batch: past the media type check, refused by validation, changes nothing.
    r = post(svc, b"{}", content_type)
    assert_json_error(r, 400, "empty")


def framed(content_length: bytes | None, body: bytes = b"", extra: bytes = b"") -> bytes:
    head = b"POST /metrics/record HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if content_length is not None:
        head += b"Content-Length: " + content_length + b"\r\n"
    return head + extra + b"Connection: close\r\n\r\n" + body


@pytest.mark.parametrize("length", [MAX_BODY + 1, 10 * MAX_BODY, 10**15])
def test_body_over_the_limit_is_413(svc: RunningDaemon, length: int) -> None:
    r = raw_request(svc, framed(str(length).encode()))  # the body is never sent
    assert_json_error(r, 413, str(MAX_BODY))


def test_body_at_the_limit_is_read(svc: RunningDaemon) -> None:
    body = b'{"memory_mb": -1}'
    body += b" " * (MAX_BODY - len(body))
    r = post(svc, body)
    assert_json_error(r, 400, "memory_mb")


def test_missing_content_length_is_411(svc: RunningDaemon) -> None:
    # No body either: a refused request's unread bytes would make the close a reset.
    r = raw_request(svc, framed(None))
    assert_json_error(r, 411, "Content-Length")


def test_chunked_body_is_411(svc: RunningDaemon) -> None:
    r = raw_request(svc, framed(None, extra=b"Transfer-Encoding: chunked\r\n"))
    assert_json_error(r, 411)


@pytest.mark.parametrize(
    "length",
    [
        b"abc",
        b"-5",
        b"1.5",
        b"0x10",
        b"1, 2",
        b"\xb2",
        b"9" * 5000,
    ],
    ids=["abc", "negative", "fraction", "hex", "list", "superscript-two", "5000-digits"],
)
def test_invalid_content_length_is_4xx_json(svc: RunningDaemon, length: bytes) -> None:
    r = raw_request(svc, framed(length))
    assert r.status is not None, f"no HTTP response at all: {r.raw[:200]!r}"
    assert_json_error(r, (400, 413))


def test_conflicting_content_lengths_are_refused(daemon: RunningDaemon) -> None:
    body = b'{"latency_ms": {"/smuggled": 1}}'
    r = raw_request(daemon, framed(str(len(body)).encode(), body,
                                   b"Content-Length: %d\r\n" % (len(body) + 7)))
    assert_json_error(r, 400)


@pytest.mark.parametrize("method", [b"GET", b"DELETE", b"PUT"])
def test_a_body_is_never_run_as_a_request(svc: RunningDaemon, method: bytes) -> None:
    inner = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    r = raw_request(
        svc,
        method + b" /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(inner)
        + inner + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert r.status is not None
    assert b"smuggled" not in r.raw, r.raw.decode("latin-1")


# --- the request line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [(b"GARBAGE", 400), (b"\x00\x01\x02 garbage \xff\xff", 400),
     (b"GET /metrics HTTP/1.1 extra", 400), (b"GET /metrics FTP/1.0", 400),
     (b"GET /metrics HTTP/1.x", 400),
     # RFC 9110 15.6.6: a major version the server does not speak is 505.
     (b"GET /metrics HTTP/2.0", 505)],
    ids=["word", "binary", "four-words", "ftp", "bad-version", "http2"],
)
def test_garbage_request_line_is_400_json(svc: RunningDaemon, line: bytes, status: int) -> None:
    r = raw_request(svc, line + b"\r\nHost: x\r\n\r\n")
    assert r.status is not None, f"no HTTP status line; the server sent {r.raw[:200]!r}"
    assert_json_error(r, status)
    assert r.headers.get("connection") == "close"


@pytest.mark.parametrize(
    ("data", "statuses"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", (414,)),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", (431, 400)),
        (b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200))
         + b"\r\n", (431, 400)),
        # RFC 9110 9.1: an unrecognised method is 501 (405 would do too).
        (b"BREW /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", (501, 405)),
        (b"get /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", (501, 405)),
    ],
    ids=["long-uri", "long-header", "many-headers", "unknown-method", "lowercase-method"],
)
def test_oversized_or_unknown_requests(svc: RunningDaemon, data: bytes,
                                       statuses: tuple[int, ...]) -> None:
    r = raw_request(svc, data)
    assert r.status is not None, r.raw[:200]
    assert_json_error(r, statuses)


# --- slow and stalled clients ------------------------------------------------------------

STALLS = [
    b"GET /metrics/prom",  # half a request line
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n",  # headers never end
    b"POST /metrics/record HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"latency_ms": {"/stalled": [1,',  # body never ends
    b"",  # connects and says nothing
]


def open_stalled(d: RunningDaemon, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection((d.host, d.port), timeout=30)
        socks.append(s)
        if STALLS[i % len(STALLS)]:
            s.sendall(STALLS[i % len(STALLS)])
    return socks


def test_stalled_clients_do_not_starve_others(svc: RunningDaemon) -> None:
    stalled = open_stalled(svc, 20)
    try:
        def client(_: int) -> int:
            ok = 0
            for _ in range(5):
                with urllib.request.urlopen(svc.url + "/metrics/prometheus", timeout=30) as r:
                    body = r.read()
                assert r.status == 200
                assert b"# TYPE crankshaft_memory_usage_mb gauge" in body
                ok += 1
            return ok

        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(client, range(16))) == [5] * 16
    finally:
        for s in stalled:
            s.close()
