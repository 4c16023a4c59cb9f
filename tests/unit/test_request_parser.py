"""The request parser alone: bytes in, a request or a refusal out (no sockets)."""

from __future__ import annotations

import pytest

from exporter.http.request_parser import MAX_LINE, Parsed, Reject, RequestParser
from tests.http_corpus import MALFORMED


def parse_all(data: bytes, step: int | None = None, max_body: int = 1_048_576
              ) -> tuple[list[Parsed], RequestParser]:
    """Every request in ``data``, fed whole or ``step`` bytes at a time."""
    parser = RequestParser(max_body, "192.0.2.1")
    step = step or len(data) or 1
    out: list[Parsed] = []
    for i in range(0, len(data), step):
        parser.feed(data[i:i + step])
        while (parsed := parser.next_request()) is not None:
            out.append(parsed)
            if not parsed.keep_alive:
                return out, parser
    return out, parser


@pytest.mark.parametrize(("data", "statuses"),
                         [pytest.param(d, s, id=name) for name, d, s in MALFORMED])
@pytest.mark.parametrize("step", [None, 1], ids=["whole", "byte-by-byte"])
def test_each_malformed_request_is_refused(data: bytes, statuses: tuple[int, ...],
                                           step: int | None) -> None:
    if step == 1 and len(data) > 20_000:
        step = 997
    with pytest.raises(Reject) as refused:
        parse_all(data, step)
    assert refused.value.status in statuses, refused.value.message
    assert refused.value.message
    assert "bytearray" not in refused.value.message  # h11 quotes the raw line: not echoed


def test_a_plain_get() -> None:
    (parsed,), _ = parse_all(b"GET /metrics?last_n=2 HTTP/1.1\r\nHost: localhost:9001\r\n"
                             b"Accept: text/plain\r\nAccept: application/json\r\n\r\n")
    r = parsed.request
    assert (r.method, r.path, r.query, r.client_ip) == ("GET", "/metrics", "last_n=2",
                                                       "192.0.2.1")
    assert r.headers == {"host": "localhost:9001", "accept": "text/plain, application/json"}
    assert parsed.keep_alive and not parsed.http10


@pytest.mark.parametrize("step", [None, 1, 7])
def test_pipelined_requests_come_out_one_by_one(step: int | None) -> None:
    body = b'{"memory_mb": 1}'
    data = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /metrics/record HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            b"HEAD /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (len(body), body))
    parsed, _ = parse_all(data, step)
    assert [(p.request.method, p.request.path) for p in parsed] == [
        ("GET", "/a"), ("POST", "/metrics/record"), ("HEAD", "/b")]
    assert parsed[1].request.body == body
    assert [p.keep_alive for p in parsed] == [True, True, False]


def test_http_10_keeps_the_connection_only_when_asked() -> None:
    (plain,), _ = parse_all(b"GET / HTTP/1.0\r\n\r\n")
    (asked,), _ = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert plain.http10 and not plain.keep_alive
    assert asked.http10 and asked.keep_alive


def test_one_empty_line_before_a_request_is_ignored() -> None:
    (parsed,), _ = parse_all(b"\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parsed.request.path == "/x"


def test_a_body_on_a_get_is_never_read_as_the_next_request() -> None:
    parsed, _ = parse_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
                             b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert [p.request.path for p in parsed] == ["/metrics"]
    assert not parsed[0].keep_alive


@pytest.mark.parametrize(("extra", "status"), [
    (b"Transfer-Encoding: chunked\r\n", 411),
    (b"", 411),
    (b"Content-Length: 101\r\n", 413),
    (b"Content-Length: " + b"9" * 5000 + b"\r\n", 400),
    (b"Content-Length: 9999999999999999\r\n", 413),
    (b"Content-Length: -1\r\n", 400),
])
def test_body_framing_of_a_post(extra: bytes, status: int) -> None:
    with pytest.raises(Reject) as refused:
        parse_all(b"POST /metrics/record HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n", None, 100)
    assert refused.value.status == status


def test_expect_100_continue_is_flagged_until_the_body_arrives() -> None:
    parser = RequestParser(100)
    parser.feed(b"POST /r HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 2\r\n\r\n")
    assert parser.next_request() is None
    assert parser.wants_continue
    parser.feed(b"{}")
    parsed = parser.next_request()
    assert parsed is not None and parsed.request.body == b"{}"
    assert not parser.wants_continue


def test_the_request_line_is_refused_as_soon_as_it_is_too_long() -> None:
    parser = RequestParser(100)
    parser.feed(b"GET /" + b"a" * MAX_LINE)  # no end of line yet
    with pytest.raises(Reject) as refused:
        parser.next_request()
    assert refused.value.status == 414


def test_tls_on_the_plain_port_is_named_at_the_first_byte() -> None:
    parser = RequestParser(100)
    parser.feed(b"\x16")
    with pytest.raises(Reject, match="not TLS"):
        parser.next_request()


def test_idle_until_a_byte_of_the_next_request() -> None:
    parser = RequestParser(100)
    assert parser.idle
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nG")
    assert not parser.idle
    assert parser.next_request() is not None
    assert not parser.idle  # the "G" of the next one
