"""The collector thread: calls a tick on schedule and feeds a heartbeat (the watchdog).

Kept apart from what a tick does so that the schedule (no drift, warm-up, interval
changes that apply at once, a heartbeat that stops when the loop hangs) is one small thing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from exporter.values import DEFAULT_INTERVAL_MS, check_interval_ms

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        tick: Callable[[], object],
        on_error: Callable[[], None],
        warmup: Callable[[], float] = lambda: 0.0,
        interval_ms: int = DEFAULT_INTERVAL_MS,
    ) -> None:
        self._tick = tick
        self._on_error = on_error
        self._warmup = warmup
        self.interval_ms = check_interval_ms(interval_ms)
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._heartbeat: tuple[Callable[[], object] | None, float] = (None, 0.0)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def set_interval(self, interval_ms: int) -> None:
        self.interval_ms = check_interval_ms(interval_ms)
        self._wake.set()

    def set_heartbeat(self, callback: Callable[[], object] | None, every_seconds: float) -> None:
        """Call ``callback`` from the loop at least every ``every_seconds``: if the loop
        hangs, the pings stop (how the systemd watchdog is fed)."""
        self._heartbeat = (callback, every_seconds)
        self._wake.set()

    def start(self) -> bool:
        """Start the thread; False if it was already running."""
        with self._guard:
            if self._thread is not None:
                return False
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="crankshaft-collector",
                                            daemon=True)
            self._thread.start()
            return True

    def stop(self) -> bool:
        """Stop and join the thread; False if it was not running."""
        with self._guard:
            thread, self._thread = self._thread, None
        if thread is None:
            return False
        self._stop.set()
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join()
        return True

    def _run(self) -> None:
        # A first tick right after start would read CPU over a window too short to mean
        # anything (or the exporter's own start-up burst): wait for the sources to warm up.
        warmup = self._warmup()
        if warmup and self._stop.wait(warmup):
            return
        last: float | None = None
        beat = -math.inf
        while not self._stop.is_set():
            interval = self.interval_ms / 1000.0
            now = time.monotonic()
            if last is None or now - last >= interval:
                # Keep to the schedule (no drift) unless a tick ran over a whole interval.
                last = now if last is None or now - last >= 2 * interval else last + interval
                try:
                    self._tick()
                except Exception:  # never let the loop die: the watchdog would restart us
                    log.exception("collection failed")
                    self._on_error()
            heartbeat, every = self._heartbeat
            if heartbeat is not None and time.monotonic() - beat >= every:
                beat = time.monotonic()
                try:
                    heartbeat()
                except Exception:
                    log.exception("heartbeat failed")
            due = last + self.interval_ms / 1000.0
            if heartbeat is not None:
                due = min(due, beat + every)
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
