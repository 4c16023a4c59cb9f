"""Where samples come from: one file per source, each declaring its series, all behind
:class:`exporter.sources.base.Source`, registered here (the one registration a new source
needs besides its own file)."""

from exporter.latency import REQUEST_LATENCY
from exporter.sources import board_health, connections, process, process_detail, registry

registry.declare_always(REQUEST_LATENCY)  # from recorded latencies, not from a source
for _module in (process, connections, process_detail, board_health):
    registry.register(_module.SOURCE)
