"""Accept and Accept-Encoding negotiation, and the memory its answers are kept in."""

from __future__ import annotations

import pytest

from exporter.http import negotiation
from exporter.http.negotiation import JSON, OPENMETRICS, TEXT, accepts_gzip, choose

PROMETHEUS = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
ROUTE = [JSON, OPENMETRICS, TEXT]  # what GET /metrics offers


@pytest.mark.parametrize(("header", "chosen"), [
    (PROMETHEUS, OPENMETRICS),
    ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", TEXT),  # Prometheus with OpenMetrics off
    ("*/*", JSON),  # curl: ties go to the first offer
    (None, JSON),
    ("", JSON),
    ("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", JSON),  # a browser
    ("image/png", JSON),  # nothing acceptable: answered anyway, not 406
    ("text/*;q=0.5,application/json;q=0.4", TEXT),
    ("application/json;q=0,*/*", OPENMETRICS),  # q=0 refuses JSON
    ("application/json;q=abc,text/plain", TEXT),  # a bad q counts as 0
    ("garbage,,;;/", JSON),
])
def test_the_clients_preference_is_served(header: str | None, chosen: str) -> None:
    assert choose(header, ROUTE) == chosen
    assert choose(header, ROUTE) == chosen  # remembered: the same answer the second time


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True), ("gzip;q=0", False),
    ("identity", False), (None, False), ("", False),
])
def test_gzip_is_used_when_the_client_accepts_it(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


def test_long_headers_are_answered_but_never_kept() -> None:
    """A client can send Accept headers of up to the head's size (256 KiB); kept answers
    would let a crowd of distinct ones hold megabytes."""
    negotiation._choose.cache_clear()
    negotiation._accepts_gzip.cache_clear()
    for i in range(200):
        padding = "x" * negotiation.CACHED_HEADER_CHARS
        assert choose(f"text/plain, application/{padding}{i}", ROUTE) == TEXT
        assert accepts_gzip(f"gzip, {padding}{i}") is True
    assert negotiation._choose.cache_info().currsize == 0
    assert negotiation._accepts_gzip.cache_info().currsize == 0
    for i in range(200):  # short ones are kept, a bounded few
        choose(f"text/plain;q=0.{i % 10}, application/x-{i}", ROUTE)
    assert 0 < negotiation._choose.cache_info().currsize <= 128
