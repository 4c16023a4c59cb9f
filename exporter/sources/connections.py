"""The seed's active and total connections: ESTABLISHED TCP connections on the service's
port, counted by :mod:`exporter.sources.readers.tcp_connections` (sock_diag netlink, with
/proc/net/tcp and psutil as fallbacks)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psutil

from exporter.series import SeriesSpec
from exporter.sources.base import Source, SourceError
from exporter.sources.readers.tcp_connections import (
    HAS_NETLINK,
    PERMANENT_ERRNOS,
    ConnectionId,
    NetlinkDiag,
    check_port,
    established_connections,
    fallback_backend,
    fallback_established_connections,
    proc_established_connections,
    psutil_established_connections,
)
from exporter.sources.registry import Option, SourceContext, SourceType

__all__ = [
    "ConnectionId",
    "ConnectionSource",
    "NetlinkDiag",
    "established_connections",
    "proc_established_connections",
    "psutil_established_connections",
]

log = logging.getLogger(__name__)

ACTIVE = SeriesSpec(
    key="active_connections",
    metric="crankshaft_websocket_active_connections",
    help="Active WebSocket connections",
    unit="count",
    json_key="websocket_active",
    csv_column="active_connections",
    push_field="active_connections",
    whole=True,
)
TOTAL = SeriesSpec(
    key="total_connections",
    metric="crankshaft_websocket_connections",
    help="WebSocket connections established since the monitored service started",
    unit="count",
    kind="counter",
    json_key="websocket_total",
    csv_column="total_connections",
    push_field="total_connections",
    whole=True,
)


class ConnectionSource(Source):
    """``active_connections`` and ``total_connections`` for the service on one local port.

    ``total_connections`` counts distinct connections seen by a collect since the source was
    created: the first collect counts all current ones, each later one adds those absent from
    the previous collect.  Only the previous tick's set is kept, so memory is bounded by the
    number of open connections; the price is that a connection opened and closed between two
    ticks is never seen, and one whose exact 4-tuple is reused by the next tick is not
    re-counted.
    """

    name = "connections"
    series = (ACTIVE, TOTAL)

    def __init__(self, port: int, *, netlink: bool = True) -> None:
        """``netlink=False`` forces the fallback reader (for tests and the benchmark anchor)."""
        self.port = check_port(port)
        if netlink and not HAS_NETLINK:
            log.info("no netlink on this platform; counting connections through "
                     "/proc/net/tcp, or psutil where that is missing too")
        self._use_netlink = netlink and HAS_NETLINK
        self._diag: NetlinkDiag | None = None
        # Whether the kernel takes the single IPv4+IPv6 dump: once refused, a reopened socket
        # starts with the per-family dumps instead of asking again.
        self._single_dump = True
        self._previous: set[ConnectionId] = set()
        self._total = 0
        #: "netlink" or "proc": what answered the last collect (None before the first)
        self.backend: str | None = None

    def collect(self) -> Mapping[str, float]:
        current = self._established()
        self._total += len(current.difference(self._previous))
        self._previous = current
        return {
            "active_connections": float(len(current)),
            "total_connections": float(self._total),
        }

    def _established(self) -> set[ConnectionId]:
        netlink_error: OSError | None = None
        if self._use_netlink:
            try:
                if self._diag is None:
                    self._diag = NetlinkDiag(single_dump=self._single_dump)
                found = self._diag.established(self.port)
            except OSError as exc:
                netlink_error = exc
                self._drop_netlink(exc)
            else:
                if self.backend in ("proc", "psutil"):
                    log.info("sock_diag netlink answers again for port %d", self.port)
                self.backend = "netlink"
                return found
        try:
            found = fallback_established_connections(self.port)
        except (OSError, psutil.Error) as exc:
            why = f"netlink: {netlink_error}; " if netlink_error is not None else ""
            raise SourceError(
                f"cannot list TCP connections on port {self.port} ({why}fallback: {exc})"
            ) from exc
        self.backend = fallback_backend()
        return found

    def _drop_netlink(self, exc: OSError) -> None:
        """Close the socket (it may hold half a dump); give up on netlink if it cannot work."""
        if self._diag is not None:
            self._single_dump = self._diag.single_dump
            self._diag.close()
            self._diag = None
        permanent = exc.errno in PERMANENT_ERRNOS
        if permanent:
            self._use_netlink = False
        if permanent or self.backend not in ("proc", "psutil"):  # log changes, not every tick
            log.warning(
                "sock_diag netlink query for port %d failed (%s); reading /proc/net/tcp%s",
                self.port,
                exc,
                " from now on" if permanent else " until it answers again",
            )

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None


def _check_port_option(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"must be between 1 and 65535 (or null), got {value!r:.40}")
    return value


def _build(context: SourceContext) -> ConnectionSource | None:
    port = context.options.get("port")
    return None if port is None else ConnectionSource(port)


SOURCE = SourceType(
    name="connections",
    series=(ACTIVE, TOTAL),
    build=_build,
    options=(
        Option(
            "port",
            None,
            _check_port_option,
            "count ESTABLISHED TCP connections to this local port (1..65535) as the active "
            "connections; null counts only what is pushed",
        ),
    ),
    help="established TCP connections to the service's port: the seed's active and total "
    "connections",
)
