"""HTTP basic auth against the bcrypt hashes of a web-config file, with a verdict cache.

A bcrypt check costs tens of milliseconds by design; Prometheus sends the same credentials
every scrape, so each verdict is remembered (as exporter-toolkit does).  The cache key is a
SHA-256 of user, password and hash, so no password is kept in memory in the clear and a
changed hash in the file is a new key.  Unknown users are checked against a fixed hash so
that timing does not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading

CACHE_SIZE = 1024
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
    def __init__(self, users: tuple[tuple[str, str], ...]) -> None:
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
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()  # rare; the next scrapes pay one bcrypt each again
            self._cache[key] = ok
        return ok
