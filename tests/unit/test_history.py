"""The history state file and its snapshots, on a real monitor in this process.

What is proven here: a snapshot restores every declared series (a source's own series
included, with no edit of the persistence code), the latency windows and histogram counts
and the extension states, with their timestamps; the file costs 16 bytes a sample plus a
small meta; a truncated, corrupt, foreign or future-version file is refused with its kind,
moved aside unchanged with one warning, and the monitor starts empty; a capacity change
keeps the newest samples; a write that fails is counted and logged once, the metrics say
so, and both exposition renderers agree byte for byte on those families; a snapshot holds
the monitor's lock only to copy, never while it encodes or writes.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import threading
import zlib
from array import array
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter import MetricsEndpoint
from exporter.exposition.fast import FastRenderer
from exporter.history import format as fmt
from exporter.history import snapshots
from exporter.history.backfill import check_extra_labels, render_history
from exporter.history.format import FormatError
from exporter.history.snapshots import Snapshotter, capture, read_state, write_atomically
from exporter.series import COUNTER, STATESET, SeriesSpec
from exporter.sources.base import Source
from exporter.store import StoreSettings
from tests.unit.test_exposition_parity import PROCESS_FAMILIES, assert_parity

T0 = 1_760_000_000.0  # seconds


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def monitor(clock: Clock, capacity: int = 100, sources: list[Source] | None = None,
            **settings: object) -> MetricsEndpoint:
    """A monitor that is not collecting: every record call stores a sample at once."""
    return MetricsEndpoint(sources=sources or [], clock=clock, rules=(),
                           settings=StoreSettings(capacity=capacity, **settings))  # type: ignore[arg-type]


def fill(ep: MetricsEndpoint, clock: Clock, n: int, start: float = 0.0) -> None:
    for i in range(n):
        clock.now += 60.0
        ep.record_memory_usage(100.0 + start + i)
        ep.record_cpu_usage((start + i) % 97 + 0.25)
        ep.record_websocket_connections(int(start + i) % 7, int(start + i))
        ep.record_request_latency(f"/api/{i % 3}", 10.0 + i)
        ep.record_extension_status(f"ext-{i % 2}", ("running", "crashed")[i % 2])


def columns(ep: MetricsEndpoint) -> dict[str, list[tuple[float, float]]]:
    with ep.recorder.lock:
        return {k: buf.samples() for k, buf in ep.store.series.items()}


def latency_view(ep: MetricsEndpoint) -> object:
    doc = ep.get_metrics()
    snap = ep.exposition_snapshot()
    hists = {k: (h.cumulative_counts, h.sum_seconds) for k, h in snap.histograms.items()}
    return doc["latency_breakdown"], hists


# --- round trip --------------------------------------------------------------------------


def test_restart_keeps_every_sample_timestamp_latency_window_and_extension_state(
    tmp_path: Path,
) -> None:
    clock = Clock()
    before = monitor(clock)
    fill(before, clock, 40)
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()

    after = monitor(clock)
    restored = Snapshotter(after.recorder, path, 300).restore()
    assert restored is not None and restored.samples == sum(map(len, columns(before).values()))
    assert columns(after) == columns(before)
    assert all(len(s) == 40 for s in columns(after).values())
    assert latency_view(after) == latency_view(before)
    assert after.get_metrics()["extensions"] == before.get_metrics()["extensions"]
    assert after.store.extensions.states() == before.store.extensions.states()
    # The restored history goes on: the next sample follows the saved ones.
    clock.now += 60.0
    after.record_memory_usage(1.0)
    assert columns(after)["memory_usage"][-1] == (clock.now * 1000.0, 1.0)


class Widget(Source):
    """A source declared only in this test: the file must keep its series unedited."""

    name = "test_history_widget"
    series = (
        SeriesSpec(key="widget_level", metric="crankshaft_test_widget_level", help="level",
                   unit="units"),
        SeriesSpec(key="widget_spins", metric="crankshaft_test_widget_spins", help="spins",
                   unit="count", kind=COUNTER, labels=(("direction", "left"),), alert=False),
        SeriesSpec(key="widget_mode", metric="crankshaft_test_widget_mode", help="mode",
                   unit="state", kind=STATESET, states=("idle", "busy"), alert=False),
    )

    def __init__(self) -> None:
        self.ticks = 0

    def collect(self) -> Mapping[str, float]:
        self.ticks += 1
        return {"widget_level": self.ticks * 1.5, "widget_spins": float(self.ticks),
                "widget_mode": float(1 << (self.ticks % 2))}


def test_a_new_sources_series_persist_without_editing_the_persistence_code(
    tmp_path: Path,
) -> None:
    clock = Clock()
    before = monitor(clock, sources=[Widget()])
    for _ in range(12):
        clock.now += 60.0
        before.collect_now()
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()
    after = monitor(clock, sources=[Widget()])
    Snapshotter(after.recorder, path, 300).restore()
    for key in ("widget_level", "widget_spins", "widget_mode"):
        assert len(columns(after)[key]) == 12
    assert columns(after) == columns(before)
    # and its backfill shows them under their declared families
    text = render_history(after.recorder).decode()
    assert 'crankshaft_test_widget_spins_total{direction="left"} 12.0 ' in text
    assert 'crankshaft_test_widget_mode{crankshaft_test_widget_mode="busy"} 1 ' in text


def test_a_series_no_longer_declared_is_dropped_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    before = monitor(clock, sources=[Widget()])
    clock.now += 60.0
    before.collect_now()
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()
    after = monitor(clock)
    with caplog.at_level(logging.INFO, logger="exporter.history.snapshots"):
        restored = Snapshotter(after.recorder, path, 300).restore()
    assert restored is not None and "widget_level" in restored.dropped_series
    assert "widget_level" not in after.store.series
    assert "no longer declared dropped" in caplog.text


def test_file_costs_16_bytes_a_sample_plus_a_small_meta(tmp_path: Path) -> None:
    clock = Clock()
    ep = monitor(clock, capacity=1440)
    fill(ep, clock, 1440)
    path = str(tmp_path / "history.bin")
    state = capture(ep.recorder)
    size = write_atomically(path, state)
    assert size == os.path.getsize(path) == len(fmt.encode(state))
    samples = state.sample_count()
    windows = sum(len(e.window) for e in state.latency.endpoints)
    assert 16 * samples + 8 * windows < size <= 16 * samples + 8 * windows + 4096
    assert (size - 8 * windows) / samples <= 17  # latency observations cost 8 bytes each


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    clock = Clock()
    ep = monitor(clock)
    fill(ep, clock, 5)
    path = tmp_path / "history.bin"
    path.write_bytes(b"old")
    write_atomically(str(path), capture(ep.recorder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.bin"]
    assert read_state(str(path)) is not None


# --- bad files ---------------------------------------------------------------------------


def good_bytes(tmp_path: Path) -> bytes:
    clock = Clock()
    ep = monitor(clock)
    fill(ep, clock, 10)
    return fmt.encode(capture(ep.recorder))


def future_version(data: bytes) -> bytes:
    magic, _version, flags, length, crc = fmt.HEADER.unpack_from(data)
    return fmt.HEADER.pack(magic, fmt.FORMAT_VERSION + 1, flags, length, crc) + data[
        fmt.HEADER.size :]


def flip_a_sample_bit(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[-3] ^= 0x10
    return bytes(damaged)


BAD = {
    "truncated": lambda d: d[: len(d) - 100],
    "truncated header": lambda d: d[:10],
    "corrupt": flip_a_sample_bit,
    "foreign": lambda d: b"memory_usage,cpu_usage\n1,2\n" * 10,
    "empty": lambda d: b"",
    "future": future_version,
}
KIND = {"truncated": "truncated", "truncated header": "truncated", "corrupt": "corrupt",
        "foreign": "foreign", "empty": "truncated", "future": "future"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_decode_refuses_a_bad_file_with_its_kind(tmp_path: Path, case: str) -> None:
    with pytest.raises(FormatError) as e:
        fmt.decode(BAD[case](good_bytes(tmp_path)))
    assert e.value.kind == KIND[case]


def test_a_checksummed_but_inconsistent_meta_is_corrupt_not_a_crash() -> None:
    meta = b'{"series": [["memory_usage", 1000000]]}'
    payload = fmt.META_LENGTH.pack(len(meta)) + meta
    data = fmt.HEADER.pack(fmt.MAGIC, fmt.FORMAT_VERSION, 0, len(payload),
                           zlib.crc32(payload)) + payload
    with pytest.raises(FormatError) as e:
        fmt.decode(data)
    assert e.value.kind == "corrupt"


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_is_moved_aside_with_one_warning_and_the_start_is_fresh(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = BAD[case](good_bytes(tmp_path))
    path = tmp_path / "history.bin"
    path.write_bytes(bad)
    clock = Clock()
    ep = monitor(clock)
    with caplog.at_level(logging.INFO, logger="exporter.history.snapshots"):
        assert Snapshotter(ep.recorder, str(path), 300, clock).restore() is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert KIND[case] in warnings[0].getMessage()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.bin.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == bad  # kept for inspection
    assert not path.exists()
    assert all(len(buf) == 0 for buf in ep.store.series.values())
    # and the next snapshot writes a good file in its place
    fill(ep, clock, 3)
    assert Snapshotter(ep.recorder, str(path), 300, clock).snapshot()
    assert read_state(str(path)).sample_count() == 3 * len(ep.store.series)


def test_a_missing_file_is_a_first_start_without_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ep = monitor(Clock())
    with caplog.at_level(logging.INFO, logger="exporter.history.snapshots"):
        assert Snapshotter(ep.recorder, str(tmp_path / "none.bin"), 300).restore() is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "no history file" in caplog.text


# --- capacity ----------------------------------------------------------------------------


def test_a_smaller_capacity_at_start_keeps_the_newest_samples(tmp_path: Path) -> None:
    clock = Clock()
    before = monitor(clock, capacity=100)
    fill(before, clock, 80)
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()
    after = monitor(clock, capacity=30)
    Snapshotter(after.recorder, path, 300).restore()
    for key, samples in columns(before).items():
        assert columns(after)[key] == samples[-30:]


def test_a_larger_capacity_at_start_keeps_all_and_has_room(tmp_path: Path) -> None:
    clock = Clock()
    before = monitor(clock, capacity=20)
    fill(before, clock, 50)  # wrapped around: the file holds the newest 20 in order
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()
    after = monitor(clock, capacity=60)
    Snapshotter(after.recorder, path, 300).restore()
    assert columns(after) == columns(before)
    fill(after, clock, 40, start=50)
    assert len(columns(after)["memory_usage"]) == 60
    assert columns(after)["memory_usage"][:20] == columns(before)["memory_usage"][-20:][:20]


def test_smaller_latency_and_extension_limits_keep_the_newest(tmp_path: Path) -> None:
    clock = Clock()
    before = monitor(clock, latency_window=50)
    for i in range(30):
        clock.now += 1
        before.record_request_latency(f"/e{i}", float(i))
        before.record_extension_status(f"x{i}", "running")
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()
    after = monitor(clock, max_endpoints=5, max_extensions=4)
    Snapshotter(after.recorder, path, 300).restore()
    assert sorted(after.get_metrics()["latency_breakdown"]) == [f"/e{i}" for i in range(25, 30)]
    assert sorted(after.get_metrics()["extensions"]) == [f"x{i}" for i in range(26, 30)]


# --- a folder that cannot be written ------------------------------------------------------


def status_values(snap: Snapshotter) -> dict[str, list[float]]:
    return {f.name: [v for _, v in f.samples] for f in snap.status()}


def test_a_failing_write_is_counted_logged_once_and_the_metrics_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ep = monitor(clock)
    fill(ep, clock, 5)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    snap = Snapshotter(ep.recorder, str(blocker / "history.bin"), 300, clock)
    ep.add_status_provider(snap.status)
    with caplog.at_level(logging.DEBUG, logger="exporter.history.snapshots"):
        assert not snap.snapshot()
        assert not snap.snapshot()
        assert not snap.snapshot()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "keeps running" in warnings[0].getMessage()
    values = status_values(snap)
    assert values[snapshots.ERRORS] == [3.0]
    assert values[snapshots.LAST_SUCCESS] == []  # never written: absent, not a made-up 0
    text = ep.render_exposition(openmetrics=False).decode()
    assert "crankshaft_history_snapshot_errors_total 3.0" in text
    assert f"# TYPE {snapshots.LAST_SUCCESS} gauge" in text
    assert f"\n{snapshots.LAST_SUCCESS} " not in text
    assert_parity(FastRenderer(), ep.exposition_snapshot(), PROCESS_FAMILIES)

    # The folder comes back: written again, said once, last success set.
    blocker.unlink()
    blocker.mkdir()
    clock.now += 10
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="exporter.history.snapshots"):
        assert snap.snapshot()
    assert "written again" in caplog.text
    values = status_values(snap)
    assert values[snapshots.ERRORS] == [3.0] and values[snapshots.LAST_SUCCESS] == [clock.now]
    text = ep.render_exposition(openmetrics=True).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["crankshaft_history_snapshot_errors"].samples[0].value == 3.0
    assert parsed[snapshots.LAST_SUCCESS].samples[0].value == clock.now
    assert_parity(FastRenderer(), ep.exposition_snapshot(), PROCESS_FAMILIES)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_a_failed_snapshot(tmp_path: Path) -> None:
    ep = monitor(Clock())
    folder = tmp_path / "state"
    folder.mkdir(mode=0o555)
    snap = Snapshotter(ep.recorder, str(folder / "history.bin"), 300)
    assert not snap.snapshot() and snap.errors == 1


# --- never blocking a tick or a scrape -------------------------------------------------------


def test_a_snapshot_holds_the_lock_only_to_copy(tmp_path: Path, monkeypatch) -> None:
    """While the snapshot thread is inside the write, a tick, an ingest and a scrape all
    run: the write is held open until they are done, so a lock held would deadlock."""
    clock = Clock()
    ep = monitor(clock)
    fill(ep, clock, 10)
    writing, release = threading.Event(), threading.Event()
    real = snapshots.encode_chunks

    def slow_chunks(state):  # type: ignore[no-untyped-def]
        writing.set()
        assert release.wait(10), "the test never released the write"
        yield from real(state)

    monkeypatch.setattr(snapshots, "encode_chunks", slow_chunks)
    snap = Snapshotter(ep.recorder, str(tmp_path / "history.bin"), 300)
    done: list[bool] = []
    worker = threading.Thread(target=lambda: done.append(snap.snapshot()))
    worker.start()
    assert writing.wait(10)
    acquired = ep.recorder.lock.acquire(timeout=5)
    assert acquired, "the snapshot holds the monitor's lock while writing"
    ep.recorder.lock.release()
    clock.now += 60
    ep.collect_now()
    ep.record_memory_usage(5.0)
    assert ep.render_exposition()
    release.set()
    worker.join(10)
    assert done == [True]
    # the file holds the moment of the copy: the sample recorded during the write is not in it
    saved = read_state(str(tmp_path / "history.bin"))
    assert len(saved.series["memory_usage"][0]) == 10


# --- backfill text -------------------------------------------------------------------------


def test_backfill_text_has_every_sample_with_its_timestamp_and_ends_with_eof() -> None:
    clock = Clock()
    ep = monitor(clock)
    fill(ep, clock, 25)
    text = render_history(ep.recorder, {"job": "crankshaft", "instance": "car-1:9001"}).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    memory = families["crankshaft_memory_usage_mb"]
    assert [(round(float(s.timestamp) * 1000), s.value) for s in memory.samples] == [
        (t, v) for t, v in columns(ep)["memory_usage"]]
    assert all(s.labels == {"job": "crankshaft", "instance": "car-1:9001"}
               for s in memory.samples)
    assert families["crankshaft_websocket_connections"].type == "counter"
    per_series = {}
    for family in families.values():
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            per_series[key] = per_series.get(key, 0) + 1
    assert set(per_series.values()) == {25}


@pytest.mark.parametrize("pairs, message", [
    (["job"], "expected NAME=VALUE"),
    (["1x=a"], "not a usable label name"),
    (["__name__=a"], "not a usable label name"),
    (["endpoint=a", "job=b"], None),
    (["job=a", "job=b"], "given twice"),
    (["job="], "needs a value"),
])
def test_extra_labels_are_checked(pairs: list[str], message: str | None) -> None:
    catalog = monitor(Clock()).store.catalog
    if message is None:
        assert check_extra_labels(pairs, catalog) == dict(p.split("=") for p in pairs)
        return
    with pytest.raises(ValueError, match=message):
        check_extra_labels(pairs, catalog)


def test_empty_history_is_just_eof() -> None:
    assert render_history(monitor(Clock()).recorder) == b"# EOF\n"


def test_header_layout_is_the_documented_one(tmp_path: Path) -> None:
    data = good_bytes(tmp_path)
    magic, version, flags, length, crc = struct.unpack_from("<8sHHQI", data)
    assert (magic, version, flags) == (b"CRNKHIST", 1, 0)
    assert length == len(data) - 24 and crc == zlib.crc32(data[24:])
    (meta_len,) = struct.unpack_from("<I", data, 24)
    assert data[28:28 + meta_len].startswith(b"{")
    first = array("d")
    first.frombytes(data[28 + meta_len: 28 + meta_len + 8])
    assert first[0] == (T0 + 60) * 1000.0


def test_temporaries_of_an_interrupted_write_are_removed_at_start(tmp_path: Path) -> None:
    clock = Clock()
    before = monitor(clock)
    fill(before, clock, 4)
    path = tmp_path / "history.bin"
    Snapshotter(before.recorder, str(path), 300).snapshot()
    (tmp_path / "history.bin.tmp-4242").write_bytes(b"half a file")
    (tmp_path / "other.bin.tmp-1").write_bytes(b"not ours")
    after = monitor(clock)
    assert Snapshotter(after.recorder, str(path), 300).restore() is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.bin", "other.bin.tmp-1"]


class RedeclaredWidget(Widget):
    """The same keys, but the level is now a counter: old gauge samples mean nothing to it."""

    series = (
        SeriesSpec(key="widget_level", metric="crankshaft_test_widget_level", help="level",
                   unit="units", kind=COUNTER),
        *Widget.series[1:],
    )


def test_a_series_whose_declaration_changed_meaning_is_not_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    before = monitor(clock, sources=[Widget()])
    for _ in range(3):
        clock.now += 60.0
        before.collect_now()
    path = str(tmp_path / "history.bin")
    Snapshotter(before.recorder, path, 300).snapshot()
    after = monitor(clock, sources=[RedeclaredWidget()])
    with caplog.at_level(logging.INFO, logger="exporter.history.snapshots"):
        restored = Snapshotter(after.recorder, path, 300).restore()
    assert restored is not None
    assert columns(after)["widget_level"] == []
    assert columns(after)["widget_spins"] == columns(before)["widget_spins"]  # unchanged
    assert "widget_level was saved as" in caplog.text


# --- what else can be at the state path -------------------------------------------------------


def _restore_in_thread(snap: Snapshotter) -> object:
    """restore() on a thread joined with a generous bound: a hang fails the test instead of
    hanging the run (a FIFO's blocking open would never return)."""
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(snap.restore()), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "restore() hung on the state path"
    return result[0]


def _plant(kind: str, path: Path, victim: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(victim)
    elif kind == "dangling-symlink":
        path.symlink_to(victim.parent / "nowhere.bin")
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling-symlink", "folder", "device"])
def test_anything_but_a_regular_file_is_moved_aside_unopened_with_one_warning(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / "history.bin"
    victim = tmp_path / "elsewhere.bin"
    victim.write_bytes(good_bytes(tmp_path))  # a good history: following the link would load it
    victim_before = victim.read_bytes()
    _plant(kind, path, victim)
    clock = Clock()
    ep = monitor(clock)
    with caplog.at_level(logging.INFO, logger="exporter.history.snapshots"):
        assert _restore_in_thread(Snapshotter(ep.recorder, str(path), 300, clock)) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "not a regular file" in warnings[0].getMessage()
    assert all(len(buf) == 0 for buf in ep.store.series.values())  # nothing was read
    aside = [p for p in state.iterdir() if p.name.startswith("history.bin.corrupt-")]
    assert len(aside) == 1 and (aside[0].is_symlink() or not aside[0].is_file())
    # The next snapshot writes a regular file in its place; the link's target is untouched.
    fill(ep, clock, 3)
    assert Snapshotter(ep.recorder, str(path), 300, clock).snapshot()
    assert path.is_file() and not path.is_symlink()
    assert read_state(str(path)).sample_count() == 3 * len(ep.store.series)
    assert victim.read_bytes() == victim_before


def test_reading_refuses_a_link_even_to_a_good_history(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere.bin"
    victim.write_bytes(good_bytes(tmp_path))
    path = tmp_path / "history.bin"
    path.symlink_to(victim)
    with pytest.raises(snapshots.NotRegularFile):
        snapshots.open_regular(str(path))
    with pytest.raises(snapshots.NotRegularFile):
        read_state(str(path))


def test_a_planted_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    """The old temporary name was ``<file>.tmp-<pid>``: a link planted under it had its
    target overwritten.  Names are now random and created exclusively."""
    clock = Clock()
    ep = monitor(clock)
    fill(ep, clock, 4)
    path = tmp_path / "history.bin"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for pid in (os.getpid(), *range(1, 50)):
        (tmp_path / f"history.bin.tmp-{pid}").symlink_to(victim)
    assert Snapshotter(ep.recorder, str(path), 300, clock).snapshot()
    assert victim.read_text() == "precious"
    assert path.is_file() and not path.is_symlink()
    assert read_state(str(path)).sample_count() == 4 * len(ep.store.series)
    # A restart clears the planted links as leftovers, never their target.
    Snapshotter(monitor(clock).recorder, str(path), 300, clock).restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.bin", "victim.txt"]
    assert victim.read_text() == "precious"


def test_a_failed_final_snapshot_at_stop_is_a_warning_even_after_earlier_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ep = monitor(Clock())
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    snap = Snapshotter(ep.recorder, str(blocker / "history.bin"), 300)
    assert not snap.snapshot()  # the first failure warns; repeats are DEBUG
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="exporter.history.snapshots"):
        snap.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "final history snapshot" in warnings[0].getMessage()
