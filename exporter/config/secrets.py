"""Secrets kept in files (a bearer token, a password): read once, checked, never logged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from exporter.config.errors import one_line

MAX_TOKEN_BYTES = 4096


def read_secret(path: Path) -> str:
    """A token or password: the file's content without surrounding whitespace."""
    shown = one_line(str(path))
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError(f"{shown} is not a regular file")
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read {shown}: {e.strerror or e}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise ValueError(f"{shown} is larger than {MAX_TOKEN_BYTES} bytes; not a token file?")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{shown} is not UTF-8 text") from None
    if not token:
        raise ValueError(f"{shown} is empty; it must hold the token")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"the token in {shown} must be one word, without spaces or line breaks")
    return token
