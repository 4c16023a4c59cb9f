"""Undelivered notifications kept on disk, so a car that was offline, or restarted while
offline, still tells its webhooks and Alertmanager what happened (with when it happened).

Alert transitions are rare, so the whole outbox is rewritten on every change: a small JSON
file replaced atomically (written to a fresh temporary file, fsync-ed, renamed), never a
half-written one.  A file that cannot be read is moved aside with a warning, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("exporter.notifiers")

VERSION = 1
MAX_BYTES = 16 << 20  # far beyond any real outbox; a larger file is not ours


class Outbox:
    """Documents waiting for delivery, in order; each has an id that ``done`` removes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: dict[int, Any] = {}
        self._next = 0
        self._failing = False
        for doc in self._read():
            self._items[self._next] = doc
            self._next += 1

    def items(self) -> list[tuple[int, Any]]:
        with self._lock:
            return list(self._items.items())

    def add(self, doc: Any) -> int:
        with self._lock:
            ident = self._next
            self._next += 1
            self._items[ident] = doc
            self._write()
            return ident

    def done(self, idents: Iterable[int]) -> None:
        with self._lock:
            changed = False
            for ident in idents:
                changed |= self._items.pop(ident, None) is not None
            if changed:
                self._write()

    def discard(self) -> None:
        """Forget everything, file included (the notifier is no longer configured)."""
        with self._lock:
            self._items.clear()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove %s: %s", self.path, e.strerror or e)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _read(self) -> list[Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as e:
            self._set_aside(f"cannot be opened ({e.strerror or e})")
            return []
        try:
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ValueError("not a regular file")
                data = f.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise ValueError("too large")
            doc = json.loads(data)
            if doc.get("version") != VERSION or not isinstance(doc.get("items"), list):
                raise ValueError("not an outbox of this version")
        except (OSError, ValueError, AttributeError) as e:
            self._set_aside(str(e))
            return []
        items: list[Any] = doc["items"]
        if items:
            log.info("%d undelivered notification(s) from before the restart in %s",
                     len(items), self.path)
        return items

    def _set_aside(self, why: str) -> None:
        aside = f"{self.path}.bad"
        try:
            os.replace(self.path, aside)
            log.warning("notification outbox %s %s; moved to %s", self.path, why, aside)
        except OSError as e:
            log.warning("notification outbox %s %s and cannot be moved aside: %s",
                        self.path, why, e.strerror or e)

    def _write(self) -> None:
        """Replace the file with the current items (called with the lock held)."""
        data = json.dumps({"version": VERSION, "items": list(self._items.values())},
                          separators=(",", ":"), allow_nan=False).encode()
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".outbox-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            if not self._failing:
                log.warning("cannot write the notification outbox %s (%s): undelivered "
                            "notifications are kept in memory only", self.path, e.strerror or e)
            self._failing = True
            return
        self._failing = False
