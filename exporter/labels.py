"""Checks for the names clients invent (endpoints, extension ids) before they become labels.

These strings end up as JSON keys, CSV cells and Prometheus label values: a lone surrogate
would make UTF-8 encoding of every later response fail, and control characters garble logs.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def check_name(what: str, value: object, max_length: int) -> str:
    """Return ``value`` if it is a usable name, else raise ValueError saying why."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"{what} is longer than {max_length} characters")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise ValueError(
            f"{what} contains a control character or lone surrogate (U+{ord(bad.group()):04X})"
        )
    return value
