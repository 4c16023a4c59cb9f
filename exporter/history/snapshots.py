"""Writing the history to its state file, and reading it back at start.

A snapshot is taken in two steps so that it never delays a collection tick or a scrape:
under the recorder's lock only array copies are made (:func:`capture`, one series at a
time, under a millisecond each for a week of history); encoding and writing happen after
the lock is released, on the snapshot thread.  Writes are atomic: a temporary file in the
same folder, fsync, rename over the old file, fsync of the folder; a crash at any moment
leaves either the previous file or the new one, never half of one.

Reading is forgiving: a missing file is a first start; a damaged, truncated, foreign or
newer-version file is logged once, moved aside as ``<file>.corrupt-<UTC time>`` for
inspection, and the daemon starts empty.  The state path is opened as a regular file only:
a symbolic link is never followed, and a FIFO (whose open would block for good), a device
or a folder there is moved aside the same way, unopened.  The temporary file of a write is
created exclusively under an unpredictable name (``mkstemp``), so nothing planted in the
folder beforehand is written through.  A folder that cannot be written (a full or
read-only disk) is logged, counted in ``crankshaft_history_snapshot_errors_total``, and
the daemon keeps running.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from exporter.history.format import (
    ExtensionsState,
    FormatError,
    HistoryState,
    check_header,
    decode,
    encode_chunks,
    identity,
)
from exporter.recording import Recorder
from exporter.snapshot import StatusFamily

log = logging.getLogger(__name__)

ERRORS = "crankshaft_history_snapshot_errors"
LAST_SUCCESS = "crankshaft_history_last_snapshot_success_timestamp_seconds"
DURATION = "crankshaft_history_snapshot_duration_seconds"
SIZE = "crankshaft_history_snapshot_bytes"
RESTORED = "crankshaft_history_restored_samples"
TMP_INFIX = ".tmp-"  # <file>.tmp-<random>: a write in progress (or cut off by a crash)
MAX_FILE_BYTES = 4 << 30  # 14 series x 10M samples x 16 bytes would be ~2 GiB


def capture(recorder: Recorder) -> HistoryState:
    """Copy what is kept: array slices and small objects, nothing else, taking the lock
    once per series so that a tick or a scrape waits at most for one series' copy (~0.5 ms
    for 60,480 samples) rather than all of them.  A tick landing between two copies is in
    the later series only: each series stays whole and in order, and the file's time is
    taken after the last copy, so no sample is newer than it."""
    with recorder.lock:
        store = recorder.store
        specs = {key: store.specs[key] for key in store.series}
        latency = store.latency.export_state()
        ext = store.extensions
        extensions = ExtensionsState(ext.states(), ext.dropped_updates, ext.evicted)
    series: dict[str, tuple[array[float], array[float]]] = {}
    identities: dict[str, str] = {}
    for key, spec in specs.items():
        with recorder.lock:
            buf = recorder.store.series.get(key)
            if buf is None:  # a reload dropped the series meanwhile
                continue
            series[key] = (buf.timestamps(), buf.values())
        identities[key] = identity(spec)
    with recorder.lock:
        now_ms = recorder.now_ms()
    return HistoryState(now_ms, series, latency, extensions, identities)


@dataclass(frozen=True, slots=True)
class Restored:
    samples: int
    series: int
    dropped_series: tuple[str, ...]  # saved but no longer declared
    notes: tuple[str, ...]


def apply(recorder: Recorder, state: HistoryState) -> Restored:
    """Put a saved state into the (fresh) store: declared series get their samples back
    (the newest that fit today's capacity), others are dropped; latency and extensions
    within today's limits."""
    with recorder.lock:
        store = recorder.store
        samples = 0
        notes = []
        kept = 0
        for key, (times, values) in state.series.items():
            buf = store.series.get(key)
            if buf is None:
                continue
            now = identity(store.specs[key])
            if state.identities.get(key) != now:
                notes.append(f"series {key} was saved as {state.identities.get(key)!r} and is "
                             f"now declared {now!r}: its samples are not restored")
                continue
            buf.load(times, values)
            samples += len(buf)
            kept += 1
        notes += store.latency.restore_state(state.latency)
        ext = state.extensions
        left_out = store.extensions.restore(ext.states, ext.dropped_updates, ext.evicted)
        if left_out:
            notes.append(f"{left_out} extensions beyond extensions.max_extensions not restored")
        dropped = tuple(k for k in state.series if k not in store.series)
    return Restored(samples, kept, dropped, tuple(notes))


def write_atomically(path: str, state: HistoryState) -> int:
    """Write the file (see the module docstring); returns its size.  Raises OSError."""
    folder, name = os.path.split(os.path.abspath(path))
    size = 0
    # O_EXCL, a random name, mode 0600: never a file (or link) someone put there first.
    fd, tmp = tempfile.mkstemp(prefix=f"{name}{TMP_INFIX}", dir=folder)
    try:
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                for chunk in encode_chunks(state):
                    size += f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return size


def read_state(path: str) -> HistoryState | None:
    """The state in ``path``; None if there is no file.  FormatError if it is not a
    history we can read; OSError if it cannot be read at all."""
    fd = open_regular(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        head = f.read(64)
        length = check_header(head)  # foreign/future files are refused before a big read
        if length > MAX_FILE_BYTES:
            raise FormatError("corrupt", f"announces a payload of {length} bytes")
        data = head + f.read()
    return decode(data)


def remove_leftovers(path: str) -> None:
    """Delete temporary files of writes that a crash (kill -9, power loss) interrupted:
    the file itself is whole, the temporaries would only fill the folder."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(f"{name}{TMP_INFIX}"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))
                log.info("removed %s, left by an interrupted history snapshot", entry)


class NotRegularFile(OSError):
    """Something other than a regular file is at the state path."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"it is {kind}, not a regular file", path)
        self.kind = kind


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str) -> int | None:
    """A descriptor of the regular file at ``path``; None if there is nothing there.
    Raises NotRegularFile for anything else, without following a link and without
    blocking (a FIFO opened for reading waits for a writer, forever)."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFile(path, _kind(before.st_mode))  # not opened: a device may react
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # swapped for a link since the lstat
            raise NotRegularFile(path, "a symbolic link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev,
                                                                   before.st_ino):
        os.close(fd)
        raise NotRegularFile(path, _kind(st.st_mode))
    os.set_blocking(fd, True)
    return fd


def move_aside(path: str, now: float | None = None) -> str | None:
    """Rename a bad file to ``<path>.corrupt-<UTC time>``; the new name, or None if even
    that failed (then the next snapshot simply replaces it).  A link is renamed itself,
    never what it points to."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.lexists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}-{n}"
    try:
        os.rename(path, target)
    except OSError as e:
        log.warning("cannot move the unreadable history file %s aside: %s", path,
                    e.strerror or e)
        return None
    return target


class Snapshotter:
    """Owns the state file: restores it at start, then writes it every ``interval_s`` on
    its own thread, and on demand (stop, a reload that changes capacity)."""

    def __init__(
        self,
        recorder: Recorder,
        path: str,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self.path = path
        self.interval_s = interval_s
        self._clock = clock
        self._write_lock = threading.Lock()  # one writer at a time: thread, stop, reload
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.last_success: float | None = None
        self.last_duration_s: float | None = None
        self.last_size: int | None = None
        self.restored_samples = 0
        self._failing = False

    # --- start ---------------------------------------------------------------------------

    def restore(self) -> Restored | None:
        """Load the file into the store; never raises (a bad file is moved aside)."""
        remove_leftovers(self.path)
        try:
            state = read_state(self.path)
        except FormatError as e:
            aside = move_aside(self.path, self._clock())
            where = f"moved to {aside}" if aside else "left in place"
            log.warning("history file %s is unusable (%s: %s); %s, starting with an empty "
                        "history", self.path, e.kind, e, where)
            return None
        except NotRegularFile as e:
            aside = move_aside(self.path, self._clock())
            where = f"moved to {aside}" if aside else "left in place"
            log.warning("history file %s is %s, not a regular file: not opened; %s, "
                        "starting with an empty history", self.path, e.kind, where)
            return None
        except OSError as e:
            log.warning("cannot read the history file %s (%s); starting with an empty "
                        "history", self.path, e.strerror or e)
            return None
        if state is None:
            log.info("no history file at %s yet; starting with an empty history", self.path)
            return None
        restored = apply(self.recorder, state)
        self.restored_samples = restored.samples
        saved = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(state.saved_at_ms / 1000))
        log.info("restored %d samples of %d series from %s (saved %s)", restored.samples,
                 restored.series, self.path, saved)
        if restored.dropped_series:
            log.info("history of series no longer declared dropped: %s",
                     ", ".join(restored.dropped_series))
        for note in restored.notes:
            log.info("history restore: %s", note)
        return restored

    # --- writing -------------------------------------------------------------------------

    def snapshot(self, final: bool = False) -> bool:
        """Capture and write now; False (logged, counted) if the write failed.  A failed
        ``final`` snapshot (at stop) is always a warning: what it held is lost."""
        with self._write_lock:
            started = time.perf_counter()
            state = capture(self.recorder)
            try:
                size = write_atomically(self.path, state)
            except OSError as e:
                self.errors += 1
                why = e.strerror or str(e)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    why += " (disk full)"
                elif e.errno == errno.EROFS:
                    why += " (read-only file system)"
                if final:
                    log.warning("cannot write the final history snapshot to %s at stop: "
                                "%s; samples since the last snapshot are lost", self.path,
                                why)
                elif not self._failing:
                    log.warning("cannot write the history file %s: %s; the daemon keeps "
                                "running and retries every %gs", self.path, why,
                                self.interval_s)
                else:
                    log.debug("history snapshot failed again: %s", why)
                self._failing = True
                return False
            except Exception:  # a bug must not stop the daemon; it is counted and logged
                self.errors += 1
                log.exception("history snapshot failed")
                return False
            self.last_duration_s = time.perf_counter() - started
            self.last_size = size
            self.last_success = self._clock()
            if self._failing:
                log.info("history file %s written again", self.path)
            self._failing = False
            log.debug("history snapshot: %d bytes in %.3fs", size, self.last_duration_s)
            return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="crankshaft-history",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.snapshot()

    def set_interval(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._wake.set()  # the new interval counts from now

    def stop(self, final_snapshot: bool = True) -> None:
        """End the thread; then (by default) write the last snapshot."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join()
        if final_snapshot:
            self.snapshot(final=True)

    # --- metrics -------------------------------------------------------------------------

    def status(self) -> list[StatusFamily]:
        families = [
            StatusFamily(ERRORS, "counter", "History snapshots that could not be written",
                         [({}, float(self.errors))]),
            StatusFamily(LAST_SUCCESS, "gauge",
                         "When the history file was last written successfully",
                         [({}, self.last_success)] if self.last_success is not None else []),
            StatusFamily(DURATION, "gauge",
                         "Duration of the last successful history snapshot",
                         [({}, self.last_duration_s)] if self.last_duration_s is not None
                         else []),
            StatusFamily(SIZE, "gauge", "Size of the last history file written",
                         [({}, float(self.last_size))] if self.last_size is not None else []),
            StatusFamily(RESTORED, "gauge", "Samples restored from the history file at start",
                         [({}, float(self.restored_samples))]),
        ]
        return families
