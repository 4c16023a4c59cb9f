"""Background delivery of JSON POSTs: bounded, ordered, retried, never blocking the caller.

A :class:`DeliveryWorker` owns one queue and one thread.  ``submit()`` appends to the queue
under a lock and returns: it never does I/O, so the collector thread that reports an alert
transition is never delayed by a slow or dead receiver.  The thread sends the items in the
order they were submitted; the head of the queue is retried until it is delivered, rejected,
out of retries or too old, and only then does the next item go (head-of-line retry, so a
receiver that comes back sees the events in the order they happened).

Outcome of one attempt:

* a 2xx response: delivered (``sent``);
* 408, 429, any 5xx, a timeout, a refused or reset connection, an unparsable response:
  retried after 1 s, 2 s, 4 s ... (doubling, capped at 60 s) while the item is younger than
  ``retry_window`` and, for failures that got an answer (a status), ``max_retries`` retries
  remain; otherwise dropped (``dropped`` with reason ``retries_exhausted`` or ``expired``).
  A receiver that cannot be reached at all is an outage (a car out of coverage), not an
  answer: its items wait for it, within ``retry_window``;
* any other status (3xx, 4xx): permanently rejected, dropped at once (reason ``rejected``);
  redirects are not followed, a POST must not silently turn into a GET.

``retry_window`` counts from the moment the item was submitted.  An item that waited behind
the head for longer than the window is dropped without being sent (reason ``expired``):
after a long outage the receiver gets what is still current, not a flood of stale events.
A window of 0 means one attempt per item and no retries.

The queue holds at most ``max_queue`` items besides the one being delivered; when it is
full the oldest waiting item is dropped (reason ``queue_full``), so an outage costs bounded
memory and the newest events survive.  Every attempt that does not deliver is counted in
``failed``.

Problems are logged once per streak, not once per retry: the first failure after a success
is a warning, the retries after it are debug messages, and the first success after failures
says how many attempts failed.  Header values (tokens) and URL credentials and query strings
are never logged.

Credentials in the URL (``https://user:pass@host/``) are sent as Basic authorization; a
configured ``Authorization`` header wins.  ``timeout`` bounds connecting and each read of
the response, as ``urllib`` applies it.
Environment proxy settings (``https_proxy``, ``no_proxy``) are honoured, as by ``curl``.
Time and waiting are injectable (:class:`Clock`) so tests run the retry schedule without
sleeping.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from exporter import __version__
from exporter.config.model import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_NOTIFY_TIMEOUT,
    DEFAULT_RETRY_WINDOW_S,
)

log = logging.getLogger("exporter.notifiers")

DEFAULT_MAX_QUEUE = 1000
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
USER_AGENT = f"crankshaft-exporter/{__version__}"

QUEUE_FULL = "queue_full"
RETRIES_EXHAUSTED = "retries_exhausted"
EXPIRED = "expired"
REJECTED = "rejected"
DROP_REASONS = (QUEUE_FULL, RETRIES_EXHAUSTED, EXPIRED, REJECTED)


class Clock(Protocol):
    """Where the worker reads time and waits; tests substitute one that does not sleep."""

    def monotonic(self) -> float: ...

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)


class Payload(Protocol):
    """A body rendered when it is sent rather than when it is submitted (state sync)."""

    def render(self) -> bytes | None:
        """The body to POST now; None when there is nothing to send (counts as done)."""
        ...

    def delivered(self) -> None:
        """Called after the body last rendered was accepted."""
        ...


# (url, body, headers, timeout seconds) -> HTTP status; raises on connection problems.
Transport = Callable[[str, bytes, Mapping[str, str], float], int]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib would re-send a redirected POST as a GET without its body


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body``; the response status (HTTP errors are returned, not raised)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            return int(response.status)
    except urllib.error.HTTPError as e:
        with contextlib.suppress(Exception):
            e.read(65536)
            e.close()
        return int(e.code)


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe for logs and metric labels."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def split_credentials(url: str) -> tuple[str, str | None]:
    """``http://user:pass@host/...`` -> the URL without them and a Basic Authorization
    value (urllib would try to resolve "user:pass@host" as a host name)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def is_retryable(status: int) -> bool:
    return status in (408, 429) or 500 <= status <= 599


def backoff_delay(
    failures: int, initial: float = INITIAL_BACKOFF_S, cap: float = MAX_BACKOFF_S
) -> float:
    """Seconds to wait after the ``failures``-th failed attempt in a row (1-based)."""
    return min(cap, initial * 2.0 ** min(failures - 1, 64))


@dataclass(eq=False)
class Pending:
    """One queued delivery."""

    payload: bytes | Payload
    submitted: float  # clock.monotonic() at submit
    key: str | None = None
    attempts: int = 0
    answered: int = 0  # failed attempts that got an answer (a status), for max_retries
    next_attempt: float = 0.0


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    sent: int
    failed: int
    dropped: dict[str, int]  # reason -> count; every reason present
    queue_length: int


class DeliveryWorker:
    """POSTs submitted bodies to one URL from one background thread (see the module doc)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_NOTIFY_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        retry_window: float = DEFAULT_RETRY_WINDOW_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
        initial_backoff: float = INITIAL_BACKOFF_S,
        max_backoff: float = MAX_BACKOFF_S,
        transport: Transport | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.name = name
        self.url, credentials = split_credentials(url)
        self.headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        if credentials is not None:
            self.headers["Authorization"] = credentials
        self.headers.update(headers or {})
        self.timeout = timeout
        self.max_retries = max_retries  # None: bounded by retry_window only
        self.retry_window = retry_window
        self.max_queue = max_queue
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._transport = transport or http_post
        self._clock = clock or SystemClock()
        self._where = redact_url(url)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: deque[Pending] = deque()
        self._current: Pending | None = None  # taken off the queue by the thread
        self._in_flight = False  # the current item is being sent right now
        self._closing = False  # no new items; deliver what is ready, no more retry waits
        self._abandoned = False  # close() returned: the thread must not send anything more
        self._sent = 0
        self._failed = 0
        self._dropped: Counter[str] = Counter()
        self._streak = 0  # failed attempts since the last success
        self._warned: set[str] = set()  # what was logged in this streak
        self._queue_full_logged = 0
        self._thread: threading.Thread | None = None

    # --- caller side ------------------------------------------------------------------------

    def start(self) -> DeliveryWorker:
        with self._lock:
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(
                    target=self._run, name=f"notify-{self.name}", daemon=True
                )
                self._thread.start()
        return self

    def submit(self, payload: bytes | Payload, key: str | None = None) -> bool:
        """Queue a delivery; O(1), no I/O, never blocks on the receiver.

        With a ``key``, an item with the same key that is waiting (not being sent right now)
        stands for this one: for payloads rendered at send time, one pending item is enough.
        Returns False if the worker is closed.
        """
        with self._lock:
            if self._closing:
                return False
            if key is not None and self._waiting_with_key(key):
                return True
            gone = None
            if len(self._queue) >= self.max_queue:
                gone = self._queue.popleft()
                self._dropped[QUEUE_FULL] += 1  # logged by the thread: no I/O here
            self._queue.append(Pending(payload, self._clock.monotonic(), key))
        self._wake.set()
        if gone is not None:
            _given_up(gone.payload)
        return True

    def _waiting_with_key(self, key: str) -> bool:
        cur = self._current
        if cur is not None and cur.key == key and not self._in_flight:
            return True
        return any(item.key == key for item in self._queue)

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                sent=self._sent,
                failed=self._failed,
                dropped={reason: self._dropped[reason] for reason in DROP_REASONS},
                queue_length=len(self._queue) + (self._current is not None),
            )

    def count_dropped(self, reason: str, n: int = 1) -> None:
        """Count drops decided by the owner (e.g. resolved alerts that expired)."""
        with self._lock:
            self._dropped[reason] += n

    def close(self, timeout: float = 5.0) -> list[Pending]:
        """Stop the thread and return what was not delivered.

        Within ``timeout`` the thread still sends what is ready (a failure is not retried);
        then it stops.  An attempt in progress at the deadline is left to its own timeout
        on a daemon thread and its item is reported as pending.
        """
        self.begin_close()
        return self.finish_close(time.monotonic() + timeout)

    def begin_close(self) -> None:
        with self._lock:
            self._closing = True
        self._wake.set()

    def finish_close(self, deadline: float) -> list[Pending]:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._abandoned = True  # a thread still stuck in a request stops after it
            pending = ([self._current] if self._current is not None else []) + list(self._queue)
        if pending:
            log.warning(
                "%s: %d notification(s) not delivered to %s at close",
                self.name,
                len(pending),
                self._where,
            )
        return pending

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        clock = self._clock
        while True:
            self._log_queue_full()
            with self._lock:
                if self._abandoned:
                    return
                if self._current is None and self._queue:
                    self._current = self._queue.popleft()
                    self._current.next_attempt = clock.monotonic()
                item, closing = self._current, self._closing
            if item is None:
                if closing:
                    return
                clock.wait(self._wake, None)
                self._wake.clear()
                continue
            now = clock.monotonic()
            if self._expired(item, now):
                self._finish(item, EXPIRED)
                continue
            if now < item.next_attempt:
                if closing:  # no more waiting for a retry: report it as pending
                    return
                wake_at = item.next_attempt
                if self.retry_window > 0:
                    wake_at = min(wake_at, item.submitted + self.retry_window)
                clock.wait(self._wake, wake_at - now)
                self._wake.clear()
                continue
            self._attempt(item)
            with self._lock:
                if self._closing and self._current is item:
                    return  # failed during close: not retried

    def _expired(self, item: Pending, now: float) -> bool:
        if self.retry_window <= 0:
            return item.attempts > 0
        return now - item.submitted >= self.retry_window

    def _attempt(self, item: Pending) -> None:
        payload = item.payload
        with self._lock:  # from now on a keyed submit queues a new item: state may change
            self._in_flight = True
        try:
            body = payload if isinstance(payload, bytes) else payload.render()
        except Exception:
            log.exception("%s: cannot build the notification", self.name)
            body = b""
        if not body:  # nothing to say right now (or nothing sensible): done
            with self._lock:
                self._in_flight = False
            self._finish(item, None if body is None else REJECTED)
            return
        item.attempts += 1
        try:
            answer = self._transport(self.url, body, self.headers, self.timeout)
            status: int | None = answer
            error = None if is_retryable(answer) or 200 <= answer < 300 else "rejected"
            problem = f"HTTP {answer}"
        except Exception as e:  # timeouts, refused connections, garbage responses
            status, error, problem = None, None, _describe(e)
        finally:
            with self._lock:
                self._in_flight = False
        if status is not None and 200 <= status < 300:
            if not isinstance(payload, bytes):
                try:
                    payload.delivered()
                except Exception:
                    log.exception("%s: delivered() callback failed", self.name)
            with self._lock:
                self._sent += 1
            if self._streak:
                log.info(
                    "%s: delivering to %s again after %d failed attempt(s)",
                    self.name,
                    self._where,
                    self._streak,
                )
            self._streak = 0
            self._warned.clear()
            self._finish(item, None)
            return
        with self._lock:
            self._failed += 1
        self._streak += 1
        if error == "rejected":
            self._log_once(
                REJECTED,
                "%s: %s rejected a notification with %s; dropping it (not retried)",
                problem,
            )
            self._finish(item, REJECTED)
            return
        if status is not None:
            item.answered += 1
        # max_retries counts answers: a receiver that cannot be reached at all (a car out of
        # coverage) is an outage, and its events wait for it within retry_window.
        retries_left = self.max_retries is None or item.answered <= self.max_retries
        if not retries_left:
            self._log_once(
                RETRIES_EXHAUSTED,
                "%s: %s failed (%s) and the retries are used up; dropping a notification",
                problem,
            )
            self._finish(item, RETRIES_EXHAUSTED)
            return
        delay = backoff_delay(item.attempts, self.initial_backoff, self.max_backoff)
        item.next_attempt = self._clock.monotonic() + delay
        self._log_once("retry", "%s: delivery to %s failed (%s); retrying with backoff", problem)

    def _finish(self, item: Pending, drop_reason: str | None) -> None:
        """The current item is done: delivered, or dropped for ``drop_reason``."""
        with self._lock:
            if self._current is item:
                self._current = None
            if drop_reason is not None:
                self._dropped[drop_reason] += 1
        if drop_reason is not None:
            _given_up(item.payload)
        if drop_reason == EXPIRED:
            self._log_once(
                EXPIRED,
                "%s: dropping notification(s) for %s (%s): older than the retry window",
                EXPIRED,
            )

    def _log_queue_full(self) -> None:
        with self._lock:
            count = self._dropped[QUEUE_FULL]
        if count > self._queue_full_logged:
            self._queue_full_logged = count
            self._log_once(
                QUEUE_FULL,
                "%s: queue for %s is full; dropping the oldest notification(s) (%s)",
                f"{count} so far",
            )

    def _log_once(self, kind: str, msg: str, detail: str) -> None:
        """Log the first occurrence of ``kind`` in a failure streak; later ones at debug."""
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        log.log(level, msg, self.name, self._where, detail)


def _given_up(payload: bytes | Payload) -> None:
    """Tell a payload that keeps itself somewhere (an outbox) that it is dropped."""
    dropped = getattr(payload, "dropped", None)
    if dropped is not None:
        try:
            dropped()
        except Exception:
            log.exception("dropped() callback failed")


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and e.reason is not None:
        reason = e.reason
        return reason if isinstance(reason, str) else _describe(reason)
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e) or type(e).__name__
    return text[:200]
