"""The web configuration in force, re-read when its files change on disk.

exporter-toolkit reads the web-config file for every connection, so a renewed certificate
is served without a restart.  Here each new connection asks :meth:`WebConfigWatcher.current`,
which looks at the files (the web-config file, certificate, key, client CA) at most once a
second and re-reads them when one changed.  A file that no longer loads keeps the running
configuration; the log says why, once per change, and ``on_result`` reports it (the daemon
turns it into ``crankshaft_config_last_reload_successful``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.config.errors import ConfigError
from exporter.http.basicauth import BasicAuth
from exporter.http.ratelimit import TokenBucket
from exporter.http.webconfig import WebConfig, load_web_config

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
Signature = tuple[tuple[int, int, int, int] | None, ...]


@dataclass(frozen=True)
class WebState:
    """What one connection is served with."""

    config: WebConfig
    auth: BasicAuth | None
    limiter: TokenBucket | None = None

    @classmethod
    def of(cls, config: WebConfig | None) -> WebState:
        config = config or WebConfig()
        rate = config.rate_limit
        return cls(config, BasicAuth(config.users) if config.users else None,
                   TokenBucket(rate.interval_s, rate.burst) if rate is not None else None)


def _signature(paths: tuple[str, ...]) -> Signature:
    result: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            result.append(None)
        else:
            result.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(result)


class WebConfigWatcher:
    def __init__(
        self,
        config: WebConfig | None,
        on_result: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._on_result = on_result
        self._monotonic = monotonic
        self._set(config)

    def _set(self, config: WebConfig | None) -> None:
        self._state = WebState.of(config)
        self._files = self._state.config.files()
        self._seen = _signature(self._files)
        self._next_check = self._monotonic() + CHECK_INTERVAL_S

    def replace(self, config: WebConfig | None) -> None:
        """A configuration already checked (start or SIGHUP reload) takes over."""
        with self._lock:
            self._set(config)

    def current(self) -> WebState:
        with self._lock:
            path = self._state.config.path
            if path is None or self._monotonic() < self._next_check:
                return self._state
            self._next_check = self._monotonic() + CHECK_INTERVAL_S
            now = _signature(self._files)
            if now == self._seen:
                return self._state
            self._seen = now
            try:
                config = load_web_config(path)
            except ConfigError as e:
                for problem in e.problems:
                    log.error("web config change rejected: %s", problem)
                log.error("keeping the running web configuration (%s)",
                          self._state.config.describe())
                ok = False
            else:
                self._state = WebState.of(config)
                self._files = config.files()
                self._seen = _signature(self._files)
                log.info("web configuration re-read from %s: %s", path, config.describe())
                ok = True
        if self._on_result is not None:
            self._on_result(ok)
        return self._state
