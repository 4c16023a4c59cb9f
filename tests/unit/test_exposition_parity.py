"""The fast renderer against prometheus_client's own encoders, and scrapes during ingest.

The exposition the daemon serves comes from :class:`exporter.exposition.fast.FastRenderer`;
the reference is prometheus_client's ``generate_latest`` (text 0.0.4) and its OpenMetrics
encoder over a ``CollectorRegistry`` holding the same families
(:class:`exporter.exposition.collector.SnapshotCollector`).  The fast renderer may only serve
scrapes while both agree byte for byte, so the property test drives a real
:class:`MetricsEndpoint` with random traffic (names that need escaping, 0 and huge values,
extension states, alert rules that fire, status families with NaN and +Inf) and compares
after every phase, with one renderer kept across phases so that its histogram cache is
exercised.  The concurrency test scrapes both formats while several threads record, and
checks every histogram it parses.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from exporter import MetricsEndpoint
from exporter.alerts.rules import ENDPOINT_METRICS, EXTENSION_METRICS, AlertRule
from exporter.exposition.collector import SnapshotCollector
from exporter.exposition.families import HISTOGRAM
from exporter.exposition.fast import FastRenderer
from exporter.extensions import EXTENSION_STATES
from exporter.ingest import parse_batch
from exporter.latency import HistogramSnapshot
from exporter.series import COUNTER, GAUGE, STATESET
from exporter.snapshot import ExpositionSnapshot, StatusFamily
from exporter.sources import board_health, process_detail
from exporter.sources.base import Source
from exporter.store import StoreSettings

# The exporter's own process_* families, frozen once so both renders see the same values.
PROCESS_FAMILIES: list[Metric] = list(ProcessCollector(registry=None).collect())


class _Fixed:
    """A collector that returns the same families at every collect."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families

    def describe(self) -> list[Metric]:
        return []


def reference(snap: ExpositionSnapshot, extra: list[Metric]) -> tuple[bytes, bytes]:
    """prometheus_client's encoders over a registry holding the snapshot's families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap))
    registry.register(_Fixed(extra))
    return generate_latest(registry), openmetrics_latest(registry)


def assert_parity(
    renderer: FastRenderer, snap: ExpositionSnapshot, extra: list[Metric] = PROCESS_FAMILIES
) -> None:
    text, openmetrics = reference(snap, extra)
    assert renderer.render(snap, False, extra) == text
    assert renderer.render(snap, True, extra) == openmetrics


# --- random traffic -----------------------------------------------------------------------

# Characters a label value must escape, or that are no ASCII, and ordinary ones.
_SPECIAL = st.sampled_from(['\\', '"', "é", "€", "😀", "/", "{", "}", ",", "=", " ", "a", "Z"])
_PRINTABLE = st.characters(exclude_categories=("Cs", "Cc"))  # what check_name lets through
# Endpoint and extension names: control characters (newline) are refused by check_name,
# so those reach the exposition only through selectors and status families below.
# (Lists joined rather than st.text: st.text draws almost only from the wide category, so
# the characters that matter would hardly ever appear.)
names = st.lists(st.one_of(_SPECIAL, _PRINTABLE), min_size=1, max_size=10).map("".join)
# Label values and HELP text that also hold newlines (status families, rule selectors).
free_text = st.lists(st.one_of(_SPECIAL, st.just("\n"), _PRINTABLE), max_size=10).map("".join)

# Latencies in ms: 0, ordinary, and huge (check_gauge/validate_latency refuse >= 1e300).
latency_ms = st.one_of(
    st.just(0.0),
    st.just(9.999e299),
    st.integers(0, 10**7),
    st.floats(0, 1e5, allow_nan=False),
    st.floats(1e290, 9.999e299),
)
gauges = st.one_of(st.just(0.0), st.floats(0, 5000, allow_nan=False), st.floats(1e290, 9.999e299))
counts = st.one_of(st.integers(0, 300), st.just(10**18))



def operations(name: st.SearchStrategy[str]) -> st.SearchStrategy[tuple]:
    """One call of the recording API (or a tick, or time passing)."""
    return st.one_of(
        st.tuples(st.just("latency"), name, latency_ms),
        st.tuples(
            st.just("batch"),
            st.dictionaries(name, st.lists(latency_ms, min_size=1, max_size=4), max_size=3),
            st.dictionaries(name, st.sampled_from(EXTENSION_STATES), max_size=2),
        ),
        st.tuples(st.just("extension"), name, st.sampled_from(EXTENSION_STATES)),
        st.tuples(st.just("memory"), gauges),
        st.tuples(st.just("cpu"), gauges),
        st.tuples(st.just("connections"), counts, counts),
        st.tuples(st.just("tick")),
        # Past evict_after (slots are freed and names re-admitted) and quiet_after.
        st.tuples(st.just("advance"), st.sampled_from([0.5, 5.0, 61.0, 400.0])),
    )


# Values a source may yield for the built-in process-detail and board-health series:
# whole counters, huge numbers, state-set bit masks; any of them may be missing.
_BUILTIN_SERIES = process_detail.SERIES + board_health.SERIES


def _spec_value(kind: str) -> st.SearchStrategy[float]:
    if kind == STATESET:
        return st.integers(0, 15).map(float)
    if kind == COUNTER:
        return st.one_of(st.integers(0, 10**9).map(float), st.just(1e299))
    return st.one_of(st.floats(-40, 120, allow_nan=False), st.just(9.999e299))


source_readings = st.fixed_dictionaries(
    {}, optional={spec.key: _spec_value(spec.kind) for spec in _BUILTIN_SERIES}
)


class ScriptedSource(Source):
    """Declares the built-in process-detail and board-health series (counters with
    labels, a unit, a state set) and yields what the test scripts for the next tick."""

    name = "scripted"
    series = _BUILTIN_SERIES

    def __init__(self) -> None:
        self.next: dict[str, float] = {}
        self.up: bool | None = None

    def collect(self) -> Mapping[str, float]:
        return self.next

    def target_up(self) -> bool | None:
        return self.up


_SERIES_METRICS = ("memory_usage", "cpu_usage", "active_connections", "total_connections",
                   "request_latency", "target_down")


@st.composite
def alert_rules(draw: st.DrawFn, name: st.SearchStrategy[str]) -> list[AlertRule]:
    """Rules whose thresholds the gauges above cross at warning and at critical, with
    selectors (endpoint/extension names, even with newlines) that need escaping."""
    rules: dict[tuple[str, str | None], AlertRule] = {}
    metric_names = st.sampled_from(_SERIES_METRICS + ENDPOINT_METRICS + EXTENSION_METRICS)
    for metric in draw(st.lists(metric_names, max_size=6)):
        selector = None
        if metric in ENDPOINT_METRICS + EXTENSION_METRICS:
            selector = draw(st.none() | name | free_text.filter(bool))
        low = draw(st.none() | st.floats(0, 3000, allow_nan=False))
        high = draw(st.none() | st.floats(0, 3000, allow_nan=False))
        if low is None and high is None:
            high = 100.0
        if low is not None and high is not None and low > high:
            low, high = high, low
        # hysteresis: a clear threshold at or below its threshold (published beside it)
        low_clear = None if low is None else draw(st.none() | st.floats(0, low))
        high_clear = None if high is None else draw(st.none() | st.floats(0, high))
        rules[(metric, selector)] = AlertRule(
            metric,
            low,
            high,
            draw(free_text),
            enabled=draw(st.booleans() | st.just(True)),
            for_seconds=draw(st.sampled_from([0.0, 0.0, 3.0])),
            warning_clear=low_clear,
            critical_clear=high_clear,
            selector=selector,
        )
    return list(rules.values())


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[list[tuple]], list[AlertRule]]:
    """Phases of operations and alert rules over a few names, mostly reused, so that one
    endpoint changes between renders, fills the caps, is evicted and comes back, and a
    selector rule watches it."""
    pool = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    name = st.one_of(st.sampled_from(pool), st.sampled_from(pool), names)
    phases = draw(st.lists(st.lists(operations(name), max_size=12), min_size=1, max_size=3))
    return phases, draw(alert_rules(name))


@st.composite
def status_families(draw: st.DrawFn) -> list[StatusFamily]:
    """Families a status provider adds: NaN, ±Inf, huge values, label values to escape."""
    families = []
    values = st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e308, -1e-308, 5e-324]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(0, 10**6),
    )
    for i in range(draw(st.integers(0, 3))):
        labelnames = draw(st.lists(st.sampled_from(["queue", "target", "zone"]), unique=True))
        samples = draw(
            st.lists(
                st.tuples(st.fixed_dictionaries({k: free_text for k in labelnames}), values),
                max_size=3,
            )
        )
        families.append(
            StatusFamily(f"crankshaft_test_status_{i}", draw(st.sampled_from([GAUGE, COUNTER])),
                         draw(free_text), samples)
        )
    return families


buckets = st.one_of(
    st.none(),  # the default Prometheus buckets
    st.lists(
        st.one_of(st.floats(1e-6, 1e7, allow_nan=False), st.sampled_from([1e-5, 1234567.0, 0.1])),
        min_size=1,
        max_size=6,
        unique=True,
    ).map(lambda xs: tuple(sorted(xs))),
)


def new_endpoint(
    clock: list[float], bucket_bounds: tuple[float, ...] | None, sources: list[Source]
) -> MetricsEndpoint:
    """Small caps and short evict/quiet durations, so slots are freed and re-taken."""
    settings_ = StoreSettings(
        max_endpoints=3,
        max_extensions=3,
        latency_quiet_after_s=300.0,
        latency_evict_after_s=60.0,
        extensions_evict_after_s=60.0,
        **({} if bucket_bounds is None else {"buckets_seconds": bucket_bounds}),
    )
    return MetricsEndpoint(sources=sources, settings=settings_, clock=lambda: clock[0])


def apply(
    ep: MetricsEndpoint, clock: list[float], op: tuple, source: ScriptedSource | None,
    reading: dict[str, float],
) -> None:
    kind = op[0]
    if kind == "latency":
        ep.record_request_latency(op[1], op[2])
    elif kind == "batch":
        doc: dict[str, object] = {"latency_ms": op[1]}
        if op[2]:
            doc["extensions"] = op[2]
        ep.record_batch(parse_batch(doc))
    elif kind == "extension":
        ep.record_extension_status(op[1], op[2])
    elif kind == "memory":
        ep.record_memory_usage(op[1])
    elif kind == "cpu":
        ep.record_cpu_usage(op[1])
    elif kind == "connections":
        ep.record_websocket_connections(op[1], op[2])
    elif kind == "tick":
        if source is not None:
            source.next = reading
            source.up = not source.up
        ep.collect_now()
    else:
        clock[0] += op[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=scenarios(),
    status=status_families(),
    bucket_bounds=buckets,
    with_source=st.booleans(),
    reading=source_readings,
)
def test_fast_renderer_bytes_equal_prometheus_client_encoders(
    scenario: tuple[list[list[tuple]], list[AlertRule]],
    status: list[StatusFamily],
    bucket_bounds: tuple[float, ...] | None,
    with_source: bool,
    reading: dict[str, float],
) -> None:
    phases, rules = scenario
    clock = [1.7e9]
    source = ScriptedSource() if with_source else None
    ep = new_endpoint(clock, bucket_bounds, [source] if source else [])
    ep.set_alert_rules(rules)
    ep.add_status_provider(lambda: status)
    renderer = FastRenderer()  # one renderer across phases: its cache must not go stale
    for phase in phases:
        for op in phase:
            apply(ep, clock, op, source, reading)
        snap = ep.exposition_snapshot()
        assert_parity(renderer, snap)
        assert_parity(FastRenderer(), snap)  # and a cold one agrees


def test_parity_covers_firing_alerts_escaping_and_non_finite_status_values() -> None:
    """One fixed scenario: the property test's interesting cases certainly happen here."""
    clock = [1.7e9]
    ep = new_endpoint(clock, None, [])
    ep.set_alert_rules([
        AlertRule("memory_usage", 100.0, 1000.0, 'say "hi"\\\n', warning_clear=80.5),
        AlertRule("cpu_usage", 50.0, 90.0, "cpu"),
        AlertRule("request_latency_p95", 10.0, 1e6, "p95", selector='a"b\\c\nd'),
        AlertRule("extension_crashed", None, 0.0, "crashed", selector="ext é"),
    ])
    status = [
        StatusFamily("crankshaft_test_queue", GAUGE, 'help \\ "q"\nline',
                     [({"queue": 'q"1\\\n€'}, math.nan), ({"queue": ""}, math.inf)]),
        StatusFamily("crankshaft_test_sent", COUNTER, "sent", [({}, 1e308)]),
    ]
    ep.add_status_provider(lambda: status)
    ep.record_memory_usage(1e299)  # critical
    ep.record_cpu_usage(60.0)  # warning
    ep.record_request_latency('/a"b\\c é', 0.0)
    ep.record_request_latency("/huge", 9.999e299)
    ep.record_extension_status('e"x\\t', "crashed")
    snap = ep.exposition_snapshot()
    text = FastRenderer().render(snap, False, PROCESS_FAMILIES).decode()
    assert 'crankshaft_alert_active{level="critical",metric="memory_usage"} 1.0' in text
    assert 'crankshaft_alert_active{level="warning",metric="cpu_usage"} 1.0' in text
    assert 'crankshaft_alert_active{level="critical",metric="cpu_usage"} 0.0' in text
    # hysteresis published beside each threshold (the threshold itself without one)
    assert ('crankshaft_alert_clear_threshold{level="warning",metric="memory_usage",'
            'selector=""} 80.5') in text
    assert ('crankshaft_alert_clear_threshold{level="critical",metric="memory_usage",'
            'selector=""} 1000.0') in text
    # what GET /metrics/alerts lists: memory once (at critical), cpu at warning
    assert 'crankshaft_active_alerts{level="critical"} 1.0' in text
    assert 'crankshaft_active_alerts{level="warning"} 1.0' in text
    assert len(ep.get_alerts()) == 2
    assert 'selector="a\\"b\\\\c\\nd"' in text
    assert 'crankshaft_test_queue{queue="q\\"1\\\\\\n€"} NaN' in text
    assert 'crankshaft_test_sent_total 1e+308' in text
    assert 'endpoint="/a\\"b\\\\c é"' in text
    assert_parity(FastRenderer(), snap)


# --- histogram counts and sums in every formatting branch ---------------------------------
#
# Recorded traffic never reaches a million observations in a test, so these build the
# histogram snapshots directly: counts on both sides of the fast renderer's 10**6 switch
# (its "%d.0" template below, floatToGoString's "2e+06" above) and beyond 10**16 (where
# Python's repr itself turns to exponents), sums and bucket bounds in every branch of
# floatToGoString (>= 1e6, >= 1e16, tiny, negative zero, NaN, +Inf, -Inf).

_COUNT_EDGES = [0, 1, 999_999, 1_000_000, 1_000_001, 2_000_000, 1_234_567, 9_999_999,
                10**15, 10**16 - 1, 10**16, 2**53 + 1, 10**19]
hist_counts = st.one_of(
    st.sampled_from(_COUNT_EDGES),
    st.integers(0, 999_999),
    st.integers(1_000_000, 10**16 - 1),
    st.integers(10**16, 10**20),
)
_SUM_EDGES = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e-7, 999_999.0, 1e6, 2e6,
              1234567.5, 1e16, 1.5e16, 1e300, -2e6]
hist_sums = st.one_of(
    st.sampled_from(_SUM_EDGES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1e-5),
    st.floats(1e6, 1e16),
    st.floats(1e16, 1e300),
)
hist_bounds = st.lists(
    st.one_of(st.sampled_from([1e-7, 0.005, 999_999.0, 1e6, 2.5e6, 1e16, 3e20]),
              st.floats(1e-9, 1e20, allow_nan=False)),
    min_size=1,
    max_size=5,
    unique=True,
).map(lambda xs: tuple(sorted(xs)))
_serials = itertools.count(10**6)  # one per drawn content: (serial, count) names the text


@st.composite
def histogram_snapshots(draw: st.DrawFn, bounds: tuple[float, ...]) -> HistogramSnapshot:
    """Cumulative counts (each at most the next, +Inf last = count) and a sum."""
    cumulative = sorted(draw(st.lists(hist_counts, min_size=len(bounds) + 1,
                                      max_size=len(bounds) + 1)))
    return HistogramSnapshot(bounds, tuple(cumulative), cumulative[-1], draw(hist_sums),
                             serial=next(_serials))


@st.composite
def histogram_phases(draw: st.DrawFn) -> list[dict[str, HistogramSnapshot]]:
    """Snapshots of a few endpoints in turn; an endpoint keeps its histogram (a cache hit)
    or gets a new one between phases."""
    pool = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    bounds = {name: draw(hist_bounds) for name in pool}
    phases: list[dict[str, HistogramSnapshot]] = []
    for _ in range(draw(st.integers(1, 3))):
        phase = {}
        for name in draw(st.lists(st.sampled_from(pool), unique=True)):
            previous = phases[-1].get(name) if phases else None
            keep = previous is not None and draw(st.booleans())
            phase[name] = previous if keep else draw(histogram_snapshots(bounds[name]))
        phases.append(phase)
    return phases


def _snapshot_with(histograms: dict[str, HistogramSnapshot]) -> ExpositionSnapshot:
    base = new_endpoint([1.7e9], None, []).exposition_snapshot()
    return dataclasses.replace(base, histograms=histograms)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(phases=histogram_phases())
def test_histogram_counts_and_sums_in_every_format_branch_match_the_encoders(
    phases: list[dict[str, HistogramSnapshot]],
) -> None:
    renderer = FastRenderer()  # kept across phases: its cached blocks must stay right
    for histograms in phases:
        snap = _snapshot_with(histograms)
        assert_parity(renderer, snap, [])
        assert_parity(FastRenderer(), snap, [])


# Each line the fast renderer formats itself, and what the library writes for it.
FORMAT_BRANCHES = [
    (999_999, "999999.0"),  # below 10**6: the "%d.0" template
    (1_000_000, "1e+06"),  # at the switch: floatToGoString's Go-style exponent
    (2_000_000, "2e+06"),
    (1_234_567, "1.234567e+06"),
    (10**16, "1e+16"),  # Python's repr turns to exponents itself
    (2**53 + 1, "9.007199254740992e+15"),  # a float's precision, as the library has it
]
SUM_BRANCHES = [
    (0.0, "0.0"), (-0.0, "-0.0"), (5e-324, "5e-324"), (1e-7, "1e-07"), (999_999.0, "999999.0"),
    (2e6, "2e+06"), (1.5e16, "1.5e+16"), (math.nan, "NaN"), (math.inf, "+Inf"),
    (-math.inf, "-Inf"), (-2e6, "-2000000.0"),  # Go-style exponents for positives only
]


@pytest.mark.parametrize(("count", "shown"), FORMAT_BRANCHES)
@pytest.mark.parametrize(("total", "total_shown"), SUM_BRANCHES)
def test_each_count_and_sum_branch_is_written_as_the_library_writes_it(
    count: int, shown: str, total: float, total_shown: str
) -> None:
    """Every branch for certain (the property test above draws them only likely): a count
    in the +Inf bucket, the _count line and a lower bucket, a sum of each kind.  The table
    is what the newest prometheus_client writes; older ones (Debian 12's 0.16) write some
    exponents differently (``e+015``), and the exposition follows the installed one."""
    if floatToGoString(2**53 + 1) != "9.007199254740992e+15":  # an older library
        shown, total_shown = floatToGoString(count), floatToGoString(total)
    bounds = (1e-7, 2.5e6, 1e16)
    hist = HistogramSnapshot(bounds, (0, 7, count, count), count, total, serial=next(_serials))
    snap = _snapshot_with({"/a": hist})
    assert_parity(FastRenderer(), snap, [])
    text = FastRenderer().render(snap, False).decode()
    assert _bucket_line(text, "/a", "+Inf").endswith(f'le="+Inf"}} {shown}')
    assert _bucket_line(text, "/a", "1e+16").endswith(f" {shown}")
    assert _bucket_line(text, "/a", "2.5e+06").endswith(" 7.0")
    assert _bucket_line(text, "/a", "1e-07").endswith(" 0.0")
    assert f'{HISTOGRAM}_count{{endpoint="/a"}} {shown}\n' in text
    assert f'{HISTOGRAM}_sum{{endpoint="/a"}} {total_shown}\n' in text


# --- the histogram cache ------------------------------------------------------------------


def _bucket_line(text: str, endpoint: str, le: str) -> str:
    prefix = f'{HISTOGRAM}_bucket{{endpoint="{endpoint}",le="{le}"}} '
    return next(line for line in text.splitlines() if line.startswith(prefix))


def test_cached_histogram_blocks_follow_new_observations() -> None:
    clock = [1.7e9]
    ep = new_endpoint(clock, None, [])
    renderer = FastRenderer()
    ep.record_request_latency("/a", 3.0)
    first = ep.exposition_snapshot()
    assert_parity(renderer, first)
    ep.record_request_latency("/a", 3.0)
    ep.record_batch(parse_batch({"latency_ms": {"/a": [7000.0, 0.0]}}))
    second = ep.exposition_snapshot()
    assert_parity(renderer, second)
    text = renderer.render(second, False).decode()
    assert _bucket_line(text, "/a", "+Inf").endswith(" 4.0")
    assert _bucket_line(text, "/a", "5.0").endswith(" 3.0")
    # An older snapshot rendered after a newer one still shows its own numbers.
    assert_parity(renderer, first)
    assert_parity(renderer, second)


def test_an_unchanged_snapshot_is_served_from_the_last_render_and_a_changed_one_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between collections a scrape reuses the text of the snapshot's families (only the
    process_* are made anew); a collection, an observation or a new status value makes it
    render again, and every answer is the library's bytes."""
    clock = [1.7e9]
    source = ScriptedSource()
    ep = new_endpoint(clock, None, [source])
    status = [StatusFamily("crankshaft_queue", "gauge", "Queued", [({}, 1.0)])]
    ep.add_status_provider(lambda: list(status))
    ep.collect_now()
    ep.record_request_latency("/a", 3.0)
    renderer = FastRenderer()
    made: list[bool] = []
    fresh = renderer._snapshot_text
    monkeypatch.setattr(renderer, "_snapshot_text",
                        lambda snap, om: made.append(om) or fresh(snap, om))

    def scrape() -> None:
        assert_parity(renderer, ep.exposition_snapshot())  # text, then OpenMetrics

    scrape()
    assert made == [False, True]
    clock[0] += 1
    scrape()  # nothing happened: an equal snapshot, taken anew
    assert made == [False, True]
    ep.collect_now()
    scrape()
    ep.record_request_latency("/a", 9.0)
    scrape()
    status[0] = StatusFamily("crankshaft_queue", "gauge", "Queued", [({}, 2.0)])
    scrape()
    assert made == [False, True] * 4


@pytest.mark.parametrize("render_between", [True, False])
def test_evicted_and_readmitted_endpoint_is_not_served_from_a_stale_block(
    render_between: bool,
) -> None:
    """``/a`` leaves (evicted) and comes back with the same count but other values; the
    renderer keeps no text of the old ``/a``, whether or not it rendered in between."""
    clock = [1.7e9]
    one_slot = StoreSettings(max_endpoints=1, latency_evict_after_s=1.0)
    ep = MetricsEndpoint(sources=[], settings=one_slot, clock=lambda: clock[0])
    renderer = FastRenderer()
    ep.record_request_latency("/a", 1.0)
    assert_parity(renderer, ep.exposition_snapshot())
    clock[0] += 2
    ep.record_request_latency("/b", 1.0)  # takes the slot of /a
    if render_between:
        snap = ep.exposition_snapshot()
        assert list(snap.histograms) == ["/b"]
        assert_parity(renderer, snap)
    clock[0] += 2
    ep.record_request_latency("/a", 7000.0)  # back, count 1 again, another bucket
    snap = ep.exposition_snapshot()
    assert list(snap.histograms) == ["/a"]
    assert snap.evicted_endpoints == 2
    assert_parity(renderer, snap)
    text = renderer.render(snap, False).decode()
    assert _bucket_line(text, "/a", "5.0").endswith(" 0.0")
    assert _bucket_line(text, "/a", "10.0").endswith(" 1.0")


# --- concurrent scrapes during ingest -----------------------------------------------------

OBSERVED_MS = 250.0  # every observation: so a consistent _sum is exactly _count * 0.25 s
ENDPOINTS = ("/a", '/q"uote', "/back\\slash", "/é")


def _histograms(families: Iterator) -> dict[str, dict[str, object]]:
    """endpoint -> {"buckets": [(le, value)], "count": n, "sum": s} of the latency family."""
    out: dict[str, dict[str, object]] = defaultdict(lambda: {"buckets": []})
    found = False
    for family in families:
        if family.name != HISTOGRAM:
            continue
        found = True
        for s in family.samples:
            entry = out[s.labels["endpoint"]]
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))  # type: ignore[union-attr]
            elif s.name.endswith("_count"):
                entry["count"] = s.value
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
    assert found, "no latency histogram family in the scrape"
    return dict(out)


def _check_consistent(hists: dict[str, dict[str, object]]) -> dict[str, float]:
    counts = {}
    for endpoint, h in hists.items():
        buckets = sorted(h["buckets"])  # type: ignore[arg-type]
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{endpoint}: buckets decrease: {buckets}"
        assert buckets[-1][0] == math.inf
        assert buckets[-1][1] == h["count"], f"{endpoint}: +Inf {buckets[-1][1]} != {h}"
        assert h["sum"] == h["count"] * OBSERVED_MS / 1000.0, f"{endpoint}: torn sum {h}"
        counts[endpoint] = h["count"]
    return counts  # type: ignore[return-value]


def test_concurrent_text_and_openmetrics_scrapes_see_no_torn_or_stale_histogram() -> None:
    ep = MetricsEndpoint(sources=[], clock=lambda: 1.7e9)
    writers_done = threading.Event()
    errors: list[BaseException] = []
    scrapes: dict[str, int] = defaultdict(int)
    recorded = [0]
    recorded_lock = threading.Lock()

    def write(seed: int) -> None:
        """At least 300 recordings, and on until every scraper has scraped 20 times."""
        try:
            for i in range(20_000):
                if i >= 300 and min(scrapes.values(), default=0) >= 20 and len(scrapes) == 4:
                    return
                endpoint = ENDPOINTS[(i + seed) % len(ENDPOINTS)]
                if i % 5 == 0:
                    k = 1 + i % 7
                    ep.record_batch(parse_batch({"latency_ms": {endpoint: [OBSERVED_MS] * k}}))
                else:
                    k = 1
                    ep.record_request_latency(endpoint, OBSERVED_MS)
                with recorded_lock:
                    recorded[0] += k
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    def scrape(name: str, openmetrics: bool) -> None:
        seen: dict[str, float] = {}
        try:
            while True:
                last_round = writers_done.is_set()
                body = ep.render_exposition(openmetrics).decode()
                parse = parse_openmetrics if openmetrics else parse_text
                counts = _check_consistent(_histograms(parse(body)))
                for endpoint, count in counts.items():
                    assert count >= seen.get(endpoint, 0), f"{name}: {endpoint} went back"
                seen.update(counts)
                scrapes[name] += 1
                if last_round:
                    return
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    writers = [threading.Thread(target=write, args=(s,)) for s in range(3)]
    scrapers = [
        threading.Thread(target=scrape, args=(f"{kind}{i}", kind == "om"))
        for kind in ("text", "om")
        for i in range(2)
    ]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings to be caught in
    try:
        for t in scrapers + writers:
            t.start()
        for t in writers:
            t.join()
        writers_done.set()
        for t in scrapers:
            t.join()
    finally:
        sys.setswitchinterval(switch_interval)
    assert not errors, errors[0]
    assert all(scrapes[f"{k}{i}"] >= 20 for k in ("text", "om") for i in range(2)), scrapes
    # After the writers: one scrape of each format accounts for every observation.
    for openmetrics, parse in ((False, parse_text), (True, parse_openmetrics)):
        final = _check_consistent(_histograms(parse(ep.render_exposition(openmetrics).decode())))
        assert sum(final.values()) == recorded[0]
        assert set(final) == set(ENDPOINTS)
