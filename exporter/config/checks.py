"""Value checks: each takes a YAML value and returns it converted, or raises ValueError.

The message says what was expected and what was found; the walker adds file, line and key
path.  Strict on types on purpose: ``"80"`` where a number belongs is usually a mistake
that would otherwise surface much later as an alert that never fires.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import TypeVar
from urllib.parse import urlsplit

from exporter.config.durations import format_duration, parse_duration
from exporter.config.errors import quote
from exporter.config.model import ListenAddress
from exporter.config.yamltree import show

T = TypeVar("T")
Check = Callable[[object], T]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def optional(check: Check[T]) -> Check[T | None]:
    """``check``, but null passes as None (for keys whose default is null)."""

    def checked(value: object) -> T | None:
        return None if value is None else check(value)

    return checked


def integer(lo: int, hi: int) -> Check[int]:
    def checked(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {show(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {show(value)}")
        return value

    return checked


def number(*, positive: bool = False) -> Check[float]:
    """A finite number (int or float, not a boolean), as a float."""

    def checked(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {show(value)}")
        try:
            result = float(value)
        except OverflowError:
            raise ValueError(f"{show(value)} is too large") from None
        if not math.isfinite(result):
            raise ValueError(f"must be a finite number, got {show(value)}")
        if positive and result <= 0:
            raise ValueError(f"must be above 0, got {show(value)}")
        return result

    return checked


def duration(lo: float, hi: float, *, lo_open: bool = False) -> Check[float]:
    """Seconds from a duration; ``lo_open`` excludes ``lo`` itself (timeouts must be > 0)."""

    def checked(value: object) -> float:
        seconds = parse_duration(value)
        too_low = seconds <= lo if lo_open else seconds < lo
        if too_low or seconds > hi:
            low = f"above {format_duration(lo)}" if lo_open else f"at least {format_duration(lo)}"
            got = format_duration(seconds) if seconds < 1e10 else "far more"
            raise ValueError(f"must be {low} and at most {format_duration(hi)}, got {got}")
        return seconds

    return checked


def string(*, empty_ok: bool = False) -> Check[str]:
    def checked(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {show(value)}")
        if not empty_ok and not value.strip():
            raise ValueError("must not be empty")
        return value

    return checked


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {show(value)}")
    return value


def choice(options: Sequence[str], noun: str, *, fold_case: bool = False) -> Check[str]:
    """One of ``options``; a near miss gets a "did you mean" suggestion."""

    def checked(value: object) -> str:
        if isinstance(value, str):
            for option in options:
                if value == option or (fold_case and value.lower() == option.lower()):
                    return option
            wanted = value.upper() if fold_case else value
            guess = (
                _close_matches(wanted, options, n=1, cutoff=0.6)
                or [option for option in options if wanted and option.startswith(wanted)][:1]
            )
            found = f"unknown {noun} {quote(value)}"
            if guess:
                found += f' (did you mean "{guess[0]}"?)'
        else:
            found = f"expected a {noun}, got {show(value)}"
        raise ValueError(f"{found}; one of {', '.join(options)}")

    return checked


def listen(value: object) -> ListenAddress:
    if not isinstance(value, str):
        raise ValueError(f'expected "HOST:PORT" such as ":9001", got {show(value)}')
    return ListenAddress.parse(value)


def network(value: object) -> IPv4Network | IPv6Network:
    """A client network in CIDR notation; a bare address is a network of one."""
    if not isinstance(value, str):
        raise ValueError(f'expected a network such as "10.0.0.0/8", got {show(value)}')
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as e:
        raise ValueError(f"invalid network {quote(value)}: {e}") from None


def url(value: object) -> str:
    """An absolute http(s) URL with a host, as notifiers POST to."""
    text = string()(value)
    if _CONTROL.search(text) or " " in text:
        raise ValueError(f"URL {quote(text)} contains spaces or control characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (parsing the port is what raises on a bad one)
    except ValueError as e:
        raise ValueError(f"invalid URL {quote(text)}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {quote(text)}")
    return text


def _close_matches(word: str, options: Sequence[str], n: int, cutoff: float) -> list[str]:
    """difflib, imported only when a mistake needs a suggestion (it costs 0.3 MiB resident)."""
    import difflib

    return difflib.get_close_matches(word, options, n=n, cutoff=cutoff)
