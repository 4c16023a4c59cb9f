"""The incrementally cached JSON text equals the plain document, whatever happened before:
wrap-around, resizes, gaps between requests, any last_n."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.endpoint import MetricsEndpoint
from exporter.store import StoreSettings, seed_catalog

SERIES_KEYS = tuple(spec.key for spec in seed_catalog())

values = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(SERIES_KEYS), values),
        st.tuples(st.just("render"), st.one_of(st.none(), st.integers(0, 40))),
        st.tuples(st.just("resize"), st.integers(1, 30)),
        st.tuples(st.just("clear"), st.sampled_from(SERIES_KEYS)),
    ),
    max_size=120,
)


def assert_same(ep: MetricsEndpoint, last_n: int) -> None:
    cached = json.loads(ep.render_metrics_json(last_n))
    plain = ep.get_metrics(last_n)
    for doc in (cached, plain):
        doc.pop("uptime_ms")
    assert cached == plain
    for key, (_, text) in ep.renderer._json._samples.items():  # holds no more than kept
        assert len(text.offsets) <= len(ep.store.series[key]), key


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 12), ops=operations, final_last_n=st.integers(-1, 40))
def test_cached_json_equals_the_document(capacity: int, ops: list, final_last_n: int) -> None:
    clock = [1.7e9]
    ep = MetricsEndpoint(sources=[], capacity=capacity, clock=lambda: clock[0])
    for op in ops:
        if op[0] == "append":
            clock[0] += 1
            key, value = op[1], op[2]
            if key in ("active_connections", "total_connections"):
                value = float(int(value))
            with ep.recorder.lock:  # straight into the store: any series, any value
                ep.store.append(key, ep.recorder.now_ms(), value)
        elif op[0] == "render":
            assert_same(ep, -1 if op[1] is None else op[1])
        elif op[0] == "resize":
            ep.reconfigure_storage(StoreSettings(capacity=op[1]))
        else:
            with ep.recorder.lock:
                ep.store.series[op[1]].clear()
    assert_same(ep, final_last_n)
