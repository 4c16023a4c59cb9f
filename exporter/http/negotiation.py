"""Accept and Accept-Encoding negotiation (RFC 9110 §12), just enough for an exporter.

``GET /metrics`` serves JSON to curl and browsers but exposition to Prometheus, which sends
``application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,*/*;q=0.1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

JSON = "application/json"
OPENMETRICS = "application/openmetrics-text"
TEXT = "text/plain"
CACHED_HEADER_CHARS = 512


@dataclass(frozen=True, slots=True)
class MediaRange:
    type: str
    subtype: str
    q: float

    def specificity(self, media_type: str) -> int:
        """-1 if this range does not match ``media_type``; higher is more specific."""
        t, _, s = media_type.partition("/")
        if self.type == "*":
            return 0 if self.subtype == "*" else -1
        if self.type != t:
            return -1
        if self.subtype == "*":
            return 1
        return 2 if self.subtype == s else -1


def _q(params: list[str]) -> float:
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header; a missing or empty header accepts anything."""
    if not header or not header.strip():
        return [MediaRange("*", "*", 1.0)]
    ranges = []
    for part in header.split(","):
        media, *params = part.split(";")
        t, sep, s = media.strip().lower().partition("/")
        if not sep or not t or not s:
            continue  # malformed entries are ignored, as browsers and servers do
        ranges.append(MediaRange(t, s, _q(params)))
    return ranges


def choose(header: str | None, offered: list[str]) -> str:
    """The offered type the client prefers; ties go to the earlier offer, and if nothing
    is acceptable the first offer is served anyway (an exporter should answer, not 406).
    A scraper sends the same header every time: the answers for short headers are
    remembered (a bounded few, so hostile headers cannot fill memory)."""
    if header is not None and len(header) > CACHED_HEADER_CHARS:
        return _choose.__wrapped__(header, tuple(offered))
    return _choose(header, tuple(offered))


@lru_cache(maxsize=128)
def _choose(header: str | None, offered: tuple[str, ...]) -> str:
    ranges = parse_accept(header)
    best, best_q = offered[0], -1.0
    for media_type in offered:
        q, spec = 0.0, -1
        for r in ranges:
            sp = r.specificity(media_type)
            if sp > spec:
                spec, q = sp, r.q
        if spec >= 0 and q > best_q and q > 0:
            best, best_q = media_type, q
    return best


def accepts_gzip(header: str | None) -> bool:
    if header is not None and len(header) > CACHED_HEADER_CHARS:
        return _accepts_gzip.__wrapped__(header)
    return _accepts_gzip(header)


@lru_cache(maxsize=128)
def _accepts_gzip(header: str | None) -> bool:
    if not header:
        return False
    for part in header.split(","):
        coding, *params = part.split(";")
        if coding.strip().lower() in ("gzip", "*") and _q(params) > 0:
            return True
    return False
