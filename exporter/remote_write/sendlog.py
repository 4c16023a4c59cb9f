"""The durable send log: every collection's samples until every receiver has taken them.

Append-only segment files, so a sample is written to the card once, not rewritten with a
growing backlog.  A record is ``length, crc32, payload``; a payload defines a series
(``S``: id and labels, repeated in each segment that uses the id so a segment stands alone)
or holds one collection (``T``: sequence number, timestamp, ids and values).  Records are
written with ``write()`` at once, so a kill -9 loses nothing (the page cache survives the
process), and ``fsync``-ed every :data:`SYNC_INTERVAL_S` and on close, which bounds what a
power loss can take.  A torn tail (power loss mid-write) is cut off at the first record
that does not check out.

Each receiver's position is a cursor file (the last acknowledged sequence number, with a
checksum) overwritten in place on every acknowledgement: after any restart delivery resumes
just past it, so nothing is sent twice.  A segment goes once every cursor is past it, or
once all of it is older than the oldest sample any receiver still wants; the log as a whole
is capped at ``max_bytes`` (oldest segments go first, counted as dropped).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from exporter.remote_write.protocol import Labels

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 60.0
SEGMENT_BYTES = 1 << 20  # a new segment after this many bytes ...
SEGMENT_SECONDS = 3600.0  # ... or after this long, so old data can be let go by age
DEFAULT_MAX_BYTES = 256 << 20
_HEAD = struct.Struct(">II")  # payload length, crc32
_TICK = struct.Struct(">cQqI")  # b"T", seq, timestamp ms, count
_SERIES = struct.Struct(">cI")  # b"S", id
_CURSOR = struct.Struct(">QI")  # seq, crc32 of the seq bytes
_MAX_RECORD = 64 << 20
_PREFIX, _SUFFIX = "seg-", ".log"
_CURSOR_PREFIX = "cursor-"


@dataclass(slots=True)
class Tick:
    """One collection: its samples as parallel id/value arrays."""

    seq: int
    timestamp_ms: int
    ids: array[int]
    values: array[float]


@dataclass(slots=True)
class _Segment:
    path: str
    first_seq: int
    last_seq: int = -1
    size: int = 0
    created: float = field(default_factory=time.monotonic)
    defined: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Entry:
    """Where one tick is, for readers and for the pending counts."""

    seq: int
    timestamp_ms: int
    count: int
    segment: _Segment
    offset: int


class Cursor:
    """A receiver's acknowledged position, kept in a small file overwritten in place."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seq = -1
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._fd = fd
        data = os.pread(fd, _CURSOR.size, 0)
        if len(data) == _CURSOR.size:
            seq, crc = _CURSOR.unpack(data)
            if zlib.crc32(data[:8]) == crc:
                self.seq = seq
            else:
                log.warning("remote write cursor %s is damaged; resending what it covered", path)

    def set(self, seq: int) -> None:
        raw = struct.pack(">Q", seq)
        os.pwrite(self._fd, raw + struct.pack(">I", zlib.crc32(raw)), 0)
        self.seq = seq

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class SendLog:
    """Appends collections; hands each receiver what it has not acknowledged yet."""

    def __init__(self, directory: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._labels: dict[int, Labels] = {}
        self._ids: dict[Labels, int] = {}
        self._segments: list[_Segment] = []
        self._entries: list[_Entry] = []
        self._seqs: list[int] = []  # the entries' seqs, for bisect
        self._cum: list[int] = []  # running sample count up to each entry, for pending()
        self._total = 0
        self._cursors: dict[str, Cursor] = {}
        self._dropped: dict[str, dict[str, int]] = {}
        self._fd = -1
        self._next_seq = 0
        self._last_sync = time.monotonic()
        self._dirty = False
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._recover()

    # --- opening ------------------------------------------------------------------------------

    def _recover(self) -> None:
        names = sorted(n for n in os.listdir(self.directory)
                       if n.startswith(_PREFIX) and n.endswith(_SUFFIX))
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                first = int(name[len(_PREFIX):-len(_SUFFIX)])
            except ValueError:
                continue
            segment = _Segment(path, first)
            self._scan(segment)
            if segment.last_seq < 0:
                os.unlink(path)
                continue
            self._segments.append(segment)
        for name in os.listdir(self.directory):  # positions first: they hold segments
            if name.startswith(_CURSOR_PREFIX):
                receiver = name[len(_CURSOR_PREFIX):]
                self._cursors[receiver] = Cursor(os.path.join(self.directory, name))
                self._dropped.setdefault(receiver, {})
        # Never below a position a receiver already holds (segments removed by hand): new
        # collections must come after every cursor, or they would count as sent.
        self._next_seq = max([c.seq + 1 for c in self._cursors.values()], default=0)
        if self._entries:
            self._next_seq = max(self._next_seq, self._entries[-1].seq + 1)
            log.info("remote write: %d collections from before the restart wait in %s",
                     len(self._entries), self.directory)

    def _scan(self, segment: _Segment) -> None:
        """Index a segment's records; cut it at the first one that does not check out."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(segment.path, flags)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                offset = 0
                while True:
                    head = f.read(_HEAD.size)
                    if len(head) < _HEAD.size:
                        break
                    length, crc = _HEAD.unpack(head)
                    payload = f.read(length) if length <= _MAX_RECORD else b""
                    if len(payload) != length or zlib.crc32(payload) != crc:
                        break
                    self._index(segment, payload, offset)
                    offset += _HEAD.size + length
            if offset != os.fstat(fd).st_size:
                log.warning("remote write log %s: cut a torn record at byte %d",
                            segment.path, offset)
                os.ftruncate(fd, offset)
            segment.size = offset
        finally:
            os.close(fd)

    def _index(self, segment: _Segment, payload: bytes, offset: int) -> None:
        kind = payload[:1]
        if kind == b"S":
            _, sid = _SERIES.unpack_from(payload)
            labels: Labels = tuple(
                (str(name), str(value)) for name, value in json.loads(payload[_SERIES.size:])
            )
            self._labels[sid] = labels
            self._ids[labels] = sid
            segment.defined.add(sid)
        elif kind == b"T":
            _, seq, ts, count = _TICK.unpack_from(payload)
            if self._seqs and seq <= self._seqs[-1]:
                return  # never expected; a sequence must only grow
            self._add_entry(_Entry(seq, ts, count, segment, offset))
            segment.last_seq = seq

    def _add_entry(self, entry: _Entry) -> None:
        self._entries.append(entry)
        self._seqs.append(entry.seq)
        self._total += entry.count
        self._cum.append(self._total)

    # --- receivers ---------------------------------------------------------------------------

    def cursor(self, name: str) -> Cursor:
        """The named receiver's cursor; a new receiver starts with what the log still holds
        (at most max_sample_age of it is sent)."""
        with self._lock:
            cursor = self._cursors.get(name)
            if cursor is None:
                cursor = Cursor(os.path.join(self.directory, _CURSOR_PREFIX + name))
                self._cursors[name] = cursor
                self._dropped.setdefault(name, {})
            return cursor

    def forget_others(self, names: Iterable[str]) -> None:
        """Drop cursors of receivers no longer configured, so they hold no segment."""
        keep = set(names)
        with self._lock:
            for name in list(self._cursors):
                if name not in keep:
                    self._cursors.pop(name).close()
            for entry in os.listdir(self.directory):
                if entry.startswith(_CURSOR_PREFIX) and entry[len(_CURSOR_PREFIX):] not in keep:
                    os.unlink(os.path.join(self.directory, entry))
            self._trim()

    # --- writing -----------------------------------------------------------------------------

    def append(self, timestamp_ms: int, samples: Iterable[tuple[Labels, float]]) -> int:
        """Record one collection; returns its sequence number.  Raises OSError (a full
        disk) with nothing written."""
        with self._lock:
            segment = self._writable_segment()
            ids: array[int] = array(_ID)
            values: array[float] = array("d")
            records: list[bytes] = []
            defined: set[int] = set()
            for labels, value in samples:
                sid = self._ids.get(labels)
                if sid is None:
                    sid = len(self._labels)
                    while sid in self._labels:
                        sid += 1
                    self._labels[sid] = labels
                    self._ids[labels] = sid
                if sid not in segment.defined and sid not in defined:
                    records.append(_SERIES.pack(b"S", sid) + json.dumps(labels).encode())
                    defined.add(sid)
                ids.append(sid)
                values.append(value)
            seq = self._next_seq
            self._next_seq += 1
            payload = _TICK.pack(b"T", seq, timestamp_ms, len(ids))
            payload += _pack_ids(ids) + _pack_values(values)
            records.append(payload)
            data = b"".join(_HEAD.pack(len(r), zlib.crc32(r)) + r for r in records)
            offset = segment.size + len(data) - _HEAD.size - len(payload)
            try:
                _write_all(self._fd, data)
            except OSError:
                os.ftruncate(self._fd, segment.size)  # no torn record before later ones
                self._next_seq -= 1
                raise
            segment.defined |= defined
            segment.size += len(data)
            segment.last_seq = seq
            self._add_entry(_Entry(seq, timestamp_ms, len(ids), segment, offset))
            self._dirty = True
            self._trim()
            self._maybe_sync()
            self.changed.notify_all()
            return seq

    def _writable_segment(self) -> _Segment:
        current = self._segments[-1] if self._segments and self._fd >= 0 else None
        if current is not None and current.size < SEGMENT_BYTES and \
                time.monotonic() - current.created < SEGMENT_SECONDS:
            return current
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
        path = os.path.join(self.directory, f"{_PREFIX}{self._next_seq:016d}{_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        if os.fstat(self._fd).st_size:  # a leftover with no valid record: start it afresh
            os.ftruncate(self._fd, 0)
        segment = _Segment(path, self._next_seq)
        self._segments.append(segment)
        return segment

    def _maybe_sync(self) -> None:
        if time.monotonic() - self._last_sync >= SYNC_INTERVAL_S:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._fd >= 0 and self._dirty:
            os.fsync(self._fd)
        for cursor in self._cursors.values():
            cursor.sync()
        self._dirty = False
        self._last_sync = time.monotonic()

    def sync(self) -> None:
        with self._lock:
            self._sync_locked()

    def close(self) -> None:
        with self._lock:
            self._sync_locked()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            for cursor in self._cursors.values():
                cursor.close()
            self._cursors.clear()
            self.changed.notify_all()

    # --- reading -----------------------------------------------------------------------------

    def labels(self, sid: int) -> Labels:
        return self._labels[sid]

    def read(self, after_seq: int, max_samples: int) -> list[Tick]:
        """Whole collections after ``after_seq``, oldest first, at least one and no more than
        ``max_samples`` samples unless one collection alone has more."""
        with self._lock:
            start = bisect.bisect_right(self._seqs, after_seq)
            chosen: list[_Entry] = []
            total = 0
            for entry in self._entries[start:]:
                if chosen and total + entry.count > max_samples:
                    break
                chosen.append(entry)
                total += entry.count
        return [self._load(e) for e in chosen]

    def _load(self, entry: _Entry) -> Tick:
        fd = os.open(entry.segment.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            head = os.pread(fd, _HEAD.size, entry.offset)
            length, crc = _HEAD.unpack(head)
            payload = os.pread(fd, length, entry.offset + _HEAD.size)
        finally:
            os.close(fd)
        if zlib.crc32(payload) != crc:
            raise OSError(f"record of collection {entry.seq} in {entry.segment.path} is damaged")
        _, seq, ts, count = _TICK.unpack_from(payload)
        body = payload[_TICK.size:]
        ids = _unpack_ids(body[: 4 * count])
        values = _unpack_values(body[4 * count:])
        return Tick(seq, ts, ids, values)

    def pending(self, after_seq: int) -> tuple[int, int | None]:
        """Samples after ``after_seq``, and the timestamp (ms) of the oldest of them."""
        with self._lock:
            start = bisect.bisect_right(self._seqs, after_seq)
            if start >= len(self._entries):
                return 0, None
            before = self._cum[start] - self._entries[start].count
            return self._total - before, self._entries[start].timestamp_ms

    def wait(self, after_seq: int, timeout: float) -> None:
        """Return when there is something after ``after_seq`` (or ``timeout`` passed)."""
        with self._lock:
            if not self._seqs or self._seqs[-1] <= after_seq:
                self.changed.wait(timeout)

    def wake(self) -> None:
        with self._lock:
            self.changed.notify_all()

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seqs[-1] if self._seqs else self._next_seq - 1

    # --- letting go --------------------------------------------------------------------------

    def trim(self) -> None:
        with self._lock:
            self._trim()

    def dropped(self) -> dict[str, dict[str, int]]:
        """Samples each receiver lost to the log's size cap, by reason."""
        with self._lock:
            return {k: dict(v) for k, v in self._dropped.items()}

    def _trim(self) -> None:
        """Delete leading segments every cursor has passed; past the size cap, the oldest
        segment goes regardless (counted for every receiver that had not taken it)."""
        while len(self._segments) > 1 or (self._segments and self._fd < 0):
            oldest = self._segments[0]
            done = all(c.seq >= oldest.last_seq for c in self._cursors.values())
            total = sum(s.size for s in self._segments)
            if not done and total <= self.max_bytes:
                break
            if not done:
                for name, cursor in self._cursors.items():
                    lost = sum(e.count for e in self._entries
                               if e.segment is oldest and e.seq > cursor.seq)
                    if lost:
                        counts = self._dropped.setdefault(name, {})
                        counts["queue_full"] = counts.get("queue_full", 0) + lost
                        log.warning("remote write log over %d bytes: %d samples for %s dropped",
                                    self.max_bytes, lost, name)
            self._drop_segment(oldest)

    def _drop_segment(self, segment: _Segment) -> None:
        n = 0
        while n < len(self._entries) and self._entries[n].segment is segment:
            n += 1
        del self._entries[:n]
        del self._seqs[:n]
        del self._cum[:n]
        self._segments.pop(0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pack_ids(ids: array[int]) -> bytes:
    out = array(_ID, ids)
    if _LITTLE:
        out.byteswap()
    return out.tobytes()


def _pack_values(values: array[float]) -> bytes:
    out = array("d", values)
    if _LITTLE:
        out.byteswap()
    return out.tobytes()


def _unpack_ids(raw: bytes) -> array[int]:
    out = array(_ID)
    out.frombytes(raw)
    if _LITTLE:
        out.byteswap()
    return out


def _unpack_values(raw: bytes) -> array[float]:
    out = array("d")
    out.frombytes(raw)
    if _LITTLE:
        out.byteswap()
    return out


_LITTLE = struct.pack("=I", 1) == struct.pack("<I", 1)
_ID = "I" if array("I").itemsize == 4 else "L"  # the 4-byte unsigned type of this platform
