"""HTTP basic auth against the bcrypt hashes of a web-config file, with a verdict cache.

A bcrypt check costs tens of milliseconds by design; Prometheus sends the same credentials
every scrape, so each verdict is remembered (as exporter-toolkit does).  The cache key is a
SHA-256 of user, password and hash, so no password is kept in memory in the clear and a
changed hash in the file is a new key.  Unknown users are checked against a fixed hash so
that timing does not tell which user names exist.

A flood of distinct wrong passwords must not lock the real scraper out: a full cache drops
a tenth of its entries, failures first (exporter-toolkit drops a tenth at random), so the
verified-good credentials stay and a scrape with them never waits for bcrypt; and the
checks waiting for the bcrypt thread are bounded (:class:`BcryptQueue`): a request that
would wait longer than ``MAX_WAIT_S`` is refused (503) instead of queueing.  The refusal
is held back about as long as the request could have waited: answered at once, 300 flooding
connections asked again as fast as the event loop answered (~4,000 requests a second, the
loop busy all the time) and the real scraper's cached verdict waited its turn behind them
(p99 ~300 ms); held, a connection gets at most one refusal a second and the loop is idle.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

CACHE_SIZE = 1024
MAX_WAIT_S = 1.0  # a check that would wait longer for the bcrypt thread is refused (503)
REFUSE_AFTER_S = MAX_WAIT_S  # when a refusal is sent, on average: as late as a check may be
# bcrypt of "fakepassword" (cost 10): what an unknown user's password is checked against.
_DUMMY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"


def parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` value, None if it is not one."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


class BasicAuth:
    def __init__(self, users: tuple[tuple[str, str], ...], cache_size: int = CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._users = {name.encode(): hashed.encode() for name, hashed in users}
        self._cache: dict[bytes, bool] = {}
        self._lock = threading.Lock()
        self._bcrypt = threading.Lock()  # one bcrypt at a time: it is CPU on purpose

    def _key(self, user: bytes, password: bytes) -> tuple[bytes, bytes]:
        hashed = self._users.get(user, _DUMMY_HASH)
        digest = hashlib.sha256()
        for part in (user, password, hashed):
            digest.update(len(part).to_bytes(4, "big") + part)
        return digest.digest(), hashed

    def cached(self, header: str | None) -> bool | None:
        """The verdict without hashing: True/False when known, None when bcrypt must run.
        Cheap enough for the event loop."""
        creds = parse_basic(header)
        if creds is None:
            return False
        key, _ = self._key(*creds)
        with self._lock:
            return self._cache.get(key)

    def verify(self, header: str | None) -> bool:
        """The verdict, running bcrypt if it is not cached (call it off the event loop)."""
        creds = parse_basic(header)
        if creds is None:
            return False
        user, password = creds
        key, hashed = self._key(user, password)
        with self._lock:
            known = self._cache.get(key)
        if known is not None:
            return known
        import bcrypt  # here, not at the top: only a daemon with users pays its 0.5 MiB

        with self._bcrypt:
            try:
                ok = bcrypt.checkpw(password, hashed)
            except ValueError:  # a hash bcrypt cannot read: nobody gets in with it
                ok = False
        ok = ok and user in self._users
        with self._lock:
            self._make_room()
            self._cache[key] = ok
        return ok

    def _make_room(self) -> None:
        """At ``cache_size``, drop a tenth: the oldest failures, then (only if the cache is
        all verified-good credentials) the oldest of those."""
        if len(self._cache) < self.cache_size:
            return
        drop = max(len(self._cache) // 10, 1)
        failures = [k for k, ok in self._cache.items() if not ok][:drop]
        for k in failures:
            del self._cache[k]
        for k in list(self._cache)[: drop - len(failures)]:
            del self._cache[k]

    def cached_count(self) -> tuple[int, int]:
        """(verified-good, failed) verdicts held."""
        with self._lock:
            good = sum(self._cache.values())
            return good, len(self._cache) - good


class BcryptQueue:
    """The checks the cache cannot answer, one at a time on a thread of their own (bcrypt is
    CPU on purpose), with a bounded wait.  Used from the event loop only."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S,
                 refuse_after_s: float = REFUSE_AFTER_S) -> None:
        self.max_wait_s = max_wait_s
        self.refuse_after_s = refuse_after_s
        self.waiting = 0  # checks submitted and not yet done
        self.refused = 0  # counted when refused, answered about ``refuse_after_s`` later
        self._cost_s = 0.05  # a bcrypt check's duration, smoothed (cost 10 on a desktop)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="crankshaft-auth")

    def has_room(self) -> bool:
        """A new check would start within ``max_wait_s`` (one always may if none waits)."""
        return self.waiting == 0 or self.waiting * self._cost_s <= self.max_wait_s

    async def verify(self, auth: BasicAuth, header: str | None) -> bool | None:
        """The verdict; None (counted in ``refused``) ~``refuse_after_s`` later if the queue
        is full.  The wait costs the loop nothing, and a client's next request must wait
        for this answer: a refusal is no cheaper to ask for than a check."""
        if not self.has_room():
            self.refused += 1
            # Spread over half to one and a half times: refusals made together (a flood
            # answered together comes back together) would otherwise be answered together
            # each time, 300 answers in one pass of the loop holding up a scrape ~100 ms.
            await asyncio.sleep(self.refuse_after_s * random.uniform(0.5, 1.5))
            return None
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            ok, spent = await loop.run_in_executor(self._pool, _timed_verify, auth, header)
        finally:
            self.waiting -= 1
        if spent > 0.001:  # a check that ran bcrypt (not one the cache answered meanwhile)
            self._cost_s = 0.8 * self._cost_s + 0.2 * spent
        return ok

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _timed_verify(auth: BasicAuth, header: str | None) -> tuple[bool, float]:
    started = time.perf_counter()
    ok = auth.verify(header)
    return ok, time.perf_counter() - started
