"""The exporter's families as prometheus_client custom collectors.

:class:`EndpointCollector` yields every family of a monitor from one snapshot per
``collect()``, so a scrape sees one consistent moment.  A program that already runs a
prometheus_client registry registers it there (``REGISTRY.register(EndpointCollector(m))``);
the daemon's own registry (:func:`build_registry`) adds the exporter's ``process_*``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.exposition.families import all_families
from exporter.snapshot import ExpositionSnapshot

if TYPE_CHECKING:
    from exporter.endpoint import MetricsEndpoint


class SnapshotCollector(Collector):
    """Families of whatever snapshot ``take`` returns at each collect."""

    def __init__(self, take: Callable[[], ExpositionSnapshot]) -> None:
        self._take = take

    def collect(self) -> Iterator[Metric]:
        yield from all_families(self._take())

    def describe(self) -> list[Metric]:
        return []  # names vary with the configuration: registered without a name check


class EndpointCollector(SnapshotCollector):
    """A monitor's families, for any prometheus_client registry."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        super().__init__(endpoint.exposition_snapshot)


def build_registry(endpoint: MetricsEndpoint) -> CollectorRegistry:
    """The daemon's registry: the monitor's families, then the exporter's own process_*."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EndpointCollector(endpoint))
    ProcessCollector(registry=registry)
    return registry
