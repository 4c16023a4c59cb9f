"""Config problems: each one line, ``FILE:LINE: key.path: message``, like a compiler's.

One line each so that ``check-config`` output, journald and editors' quick-fix lists can all
take them as they are; all of them at once so a user fixes a file in one pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

_UNPRINTABLE = re.compile(r"[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def quote(text: str, limit: int = 60) -> str:
    """``text`` in double quotes, escaped to one printable line and shortened to ``limit``."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    body = json.dumps(text, ensure_ascii=False)
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", body)


def one_line(text: str) -> str:
    """Printable on one line whatever it holds (a lone surrogate would break UTF-8 output)."""
    text = " ".join(text.split())
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config; ``line`` is 1-based, None when the file itself is bad."""

    source: str
    line: int | None
    path: str  # the key path, e.g. "alerts[1].warning"; "" for the file or the YAML itself
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` are the one-line messages, in file order."""

    def __init__(self, details: Iterable[Problem]) -> None:
        self.details: list[Problem] = sorted(details, key=lambda p: p.line or 0)
        self.problems: list[str] = [str(p) for p in self.details]
        super().__init__("\n".join(self.problems))
