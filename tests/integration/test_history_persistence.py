"""History across restarts, with the real daemon as a subprocess.

SIGTERM then start serves every sample with its timestamp, the latency windows, histogram
counts and extension states; ``kill -9`` loses only what came after the last snapshot;
a truncated, corrupt, foreign or future-version file is moved aside with one warning and
the daemon starts fresh; a read-only or full state folder is a warning, the daemon keeps
serving and its metrics say so; a reload that changes capacity writes the longer history
first and keeps the newest samples; ``GET /metrics/history`` is OpenMetrics with
timestamps ending ``# EOF``.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.history import format as fmt
from exporter.history.snapshots import ERRORS, LAST_SUCCESS, read_state
from tests.conftest import RunningDaemon, launch_daemon, start_daemon
from tests.helpers import wait_for

OPENMETRICS = "application/openmetrics-text"


def write_config(path: Path, state_file: Path, *, max_samples: int = 400,
                 snapshot_interval: str = "1h") -> Path:
    path.write_text(yaml.safe_dump({
        "interval": "50ms",
        "history": {"max_samples": max_samples, "state_file": str(state_file),
                    "snapshot_interval": snapshot_interval},
    }))
    return path


def document(d: RunningDaemon) -> dict:
    r = d.request("/metrics")
    assert r.status == 200, r.text
    return r.json()  # type: ignore[return-value]


def samples(doc: dict, series: str = "memory") -> list[tuple[float, float]]:
    return [(s["timestamp"], s["value"]) for s in doc[series]["samples"]]


def exposition(d: RunningDaemon) -> dict:
    r = d.request("/metrics/prometheus", headers={"Accept": OPENMETRICS})
    assert r.status == 200, r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict, name: str) -> float | None:
    family = families.get(name)
    return family.samples[0].value if family and family.samples else None


def wait_samples(d: RunningDaemon, n: int) -> dict:
    return wait_for(lambda: (doc := document(d))["memory"]["sample_count"] >= n and doc,
                    f"{n} memory samples")


def file_samples(path: Path, key: str = "memory_usage") -> list[tuple[float, float]]:
    state = read_state(str(path))
    assert state is not None
    times, values = state.series[key]
    return list(zip(times, values, strict=True))


def push_traffic(d: RunningDaemon) -> None:
    r = d.post_json("/metrics/record", {
        "latency_ms": {"/api/media/play": [42.1, 95.3, 38.0, 1200.0], "/api/settings": 15.2},
        "extensions": {"media-player": "running", "phone": "crashed"},
    })
    assert r.status == 200, r.text


def histogram(families: dict) -> list:
    family = families["crankshaft_request_duration_seconds"]
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples)


# --- restart --------------------------------------------------------------------------------


def test_sigterm_then_start_serves_every_sample_and_timestamp(tmp_path: Path) -> None:
    state = tmp_path / "state" / "history.bin"
    state.parent.mkdir()
    config = write_config(tmp_path / "exporter.yaml", state)
    first = start_daemon(tmp_path, "--config", str(config))
    try:
        push_traffic(first)
        seen = wait_samples(first, 30)
        families = exposition(first)
    finally:
        assert first.stop() == 0
    saved = file_samples(state)
    # everything served before the stop is in the file, with its timestamp and value
    for series, key in (("memory", "memory_usage"), ("cpu", "cpu_usage")):
        stored = file_samples(state, key)
        assert samples(seen, series) == stored[: len(samples(seen, series))]
    saved_at = read_state(str(state)).saved_at_ms

    second = start_daemon(tmp_path, "--config", str(config))
    try:
        doc = document(second)
        # the restored samples come first, unchanged; new ones only after the downtime gap
        assert samples(doc)[: len(saved)] == saved
        assert all(t > saved_at for t, _ in samples(doc)[len(saved):])
        assert f"restored {read_state(str(state)).sample_count()} samples" in second.log()
        assert doc["latency_breakdown"] == seen["latency_breakdown"]
        assert doc["extensions"] == seen["extensions"]
        assert histogram(exposition(second)) == histogram(families)
        restored = value(exposition(second), "crankshaft_history_restored_samples")
        assert restored == read_state(str(state)).sample_count()
    finally:
        assert second.stop() == 0


def test_kill_9_loses_only_what_came_after_the_last_snapshot(tmp_path: Path) -> None:
    state = tmp_path / "history.bin"
    config = write_config(tmp_path / "exporter.yaml", state, snapshot_interval="1s")
    first = start_daemon(tmp_path, "--config", str(config))
    try:
        # two snapshots written, so the periodic thread (not the start) wrote the file
        wait_for(lambda: (value(exposition(first), LAST_SUCCESS) or 0) > 0, "a first snapshot")
        last = value(exposition(first), LAST_SUCCESS)
        wait_for(lambda: value(exposition(first), LAST_SUCCESS) != last, "a second snapshot")
        before = samples(document(first))
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait()
    assert first.proc.returncode == -signal.SIGKILL
    kept = read_state(str(state))
    saved = file_samples(state)
    # What the file holds is exactly what was served up to the snapshot's moment ...
    assert saved == [s for s in before if s[0] <= kept.saved_at_ms][: len(saved)]
    # ... and holds everything served before the snapshot before it had been written
    # (the kept snapshot copied its series after that).  Not up to the newest success: a
    # snapshot's write ends after its copy, and a tick between the two is in the next one.
    assert [s for s in before if s[0] <= last * 1000.0] == saved[
        : len([s for s in before if s[0] <= last * 1000.0])]
    lost = [s for s in before if s[0] > kept.saved_at_ms]
    second = start_daemon(tmp_path, "--config", str(config))
    try:
        assert samples(document(second))[: len(saved)] == saved
        # the loss is what the interrupted snapshot interval held (reported, not asserted
        # against a clock: the run's figure is printed with -s)
        print(f"kill -9: {len(lost)} samples after the last snapshot lost, "
              f"{(lost[-1][0] - lost[0][0]) / 1000 if lost else 0:.2f}s of history")
        assert all(t > last * 1000.0 for t, _ in lost)
    finally:
        assert second.stop() == 0


# --- bad files --------------------------------------------------------------------------------


def a_good_file(tmp_path: Path) -> bytes:
    state = tmp_path / "good" / "history.bin"
    state.parent.mkdir()
    d = start_daemon(tmp_path, "--config",
                     str(write_config(tmp_path / "good.yaml", state)))
    wait_samples(d, 5)
    assert d.stop() == 0
    return state.read_bytes()


def damage(kind: str, data: bytes) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "corrupt":
        flipped = bytearray(data)
        flipped[len(data) - 5] ^= 0x01
        return bytes(flipped)
    if kind == "foreign":
        return b"\x89PNG\r\n\x1a\n" + data[8:]
    magic, _, flags, length, crc = fmt.HEADER.unpack_from(data)
    return fmt.HEADER.pack(magic, fmt.FORMAT_VERSION + 1, flags, length, crc) + data[24:]


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "foreign", "future"])
def test_a_bad_file_is_moved_aside_with_one_warning_and_a_fresh_start(
    tmp_path: Path, kind: str
) -> None:
    bad = damage(kind, a_good_file(tmp_path))
    state = tmp_path / "state" / "history.bin"
    state.parent.mkdir()
    state.write_bytes(bad)
    d = start_daemon(tmp_path, "--config", str(write_config(tmp_path / "bad.yaml", state)))
    try:
        warnings = [line for line in d.log().splitlines() if " WARNING " in line]
        assert len(warnings) == 1, d.log()
        assert f"({kind}:" in warnings[0] and "moved to" in warnings[0], warnings
        aside = [p for p in state.parent.iterdir() if ".corrupt-" in p.name]
        assert len(aside) == 1 and aside[0].read_bytes() == bad
        assert str(aside[0]) in warnings[0]
        doc = wait_samples(d, 3)
        # fresh: nothing older than this run
        assert value(exposition(d), "crankshaft_history_restored_samples") == 0.0
        assert all(t >= doc["timestamp"] - doc["uptime_ms"] - 1000 for t, _ in samples(doc))
        assert d.request("/healthz").status == 200
    finally:
        assert d.stop() == 0
    assert read_state(str(state)) is not None  # a good file took its place


# --- a state folder that cannot be written ------------------------------------------------------


def _in_private_mount(setup: str, argv: list[str]) -> list[str]:
    """``argv`` in its own mount namespace after ``setup`` (root only): the test's mounts
    vanish with the process."""
    script = f"{setup} && exec {shlex.join(argv)}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def start_in(tmp_path: Path, config: Path, setup: str | None) -> RunningDaemon:
    argv = [sys.executable, "-m", "exporter", "run", "--listen", "127.0.0.1:0",
            "--config", str(config)]
    if setup is not None:
        argv = _in_private_mount(setup, argv)
    return launch_daemon(argv, tmp_path / f"daemon-{time.monotonic_ns()}.log",
                         dict(os.environ))


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_an_unwritable_state_folder_warns_and_the_daemon_keeps_running(
    tmp_path: Path, how: str
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    state = folder / "history.bin"
    state.write_bytes(a_good_file(tmp_path))  # written before the disk turned read-only
    config = write_config(tmp_path / "exporter.yaml", state, snapshot_interval="1s")
    root = os.geteuid() == 0
    if how == "full" and not root:
        pytest.skip("a full file system needs a tmpfs mount (root)")
    q = shlex.quote(str(folder))
    if how == "read-only":
        setup = f"mount --bind -o ro {q} {q}" if root else None
        if not root:
            folder.chmod(0o555)
    else:  # a small tmpfs over the folder, holding the old file, filled to the last byte
        setup = (f"cp {shlex.quote(str(state))} {q}.old && mount -t tmpfs -o size=64k tmpfs {q}"
                 f" && cp {q}.old {q}/history.bin && (dd if=/dev/zero of={q}/filler bs=4k"
                 " 2>/dev/null || true)")
    d = start_in(tmp_path, config, setup)
    try:
        families = wait_for(lambda: (f := exposition(d)) and (value(f, ERRORS) or 0) >= 2 and f,
                            "two failed snapshots counted")
        assert value(families, LAST_SUCCESS) is None  # never written: absent
        assert (value(families, "crankshaft_history_restored_samples") or 0) > 0  # read fine
        warnings = [line for line in d.log().splitlines() if " WARNING " in line]
        assert len(warnings) == 1, d.log()
        reason = "read-only file system" if root and how == "read-only" else (
            "disk full" if how == "full" else "Permission denied")
        assert "cannot write the history file" in warnings[0] and reason in warnings[0]
        assert "keeps running" in warnings[0]
        assert d.request("/healthz").status == 200
        assert document(d)["memory"]["sample_count"] > 0
    finally:
        if not root:
            folder.chmod(0o755)
        assert d.stop() == 0  # the last snapshot fails too: still a clean exit


# --- capacity ----------------------------------------------------------------------------------


def test_a_reload_that_shrinks_capacity_writes_the_longer_history_first(tmp_path: Path) -> None:
    state = tmp_path / "history.bin"
    config = write_config(tmp_path / "exporter.yaml", state, max_samples=400)
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        wait_samples(d, 60)
        assert not state.exists()  # snapshot_interval 1h: nothing written yet
        write_config(config, state, max_samples=20)
        os.kill(d.pid, signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in d.log(), "the reload")
        saved = file_samples(state)
        assert len(saved) >= 60  # written before the shrink dropped them
        doc = document(d)
        assert doc["memory"]["sample_count"] <= 20
        kept = [s for s in samples(doc) if s[0] <= saved[-1][0]]
        assert kept == saved[len(saved) - len(kept):]  # the newest ones
        assert value(exposition(d), LAST_SUCCESS) is not None
    finally:
        assert d.stop() == 0


def test_start_with_a_smaller_capacity_keeps_the_newest_samples(tmp_path: Path) -> None:
    state = tmp_path / "history.bin"
    config = write_config(tmp_path / "exporter.yaml", state, max_samples=400)
    d = start_daemon(tmp_path, "--config", str(config))
    wait_samples(d, 40)
    assert d.stop() == 0
    saved = file_samples(state)
    write_config(config, state, max_samples=25)
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        assert samples(document(d))[:25] == saved[-25:]
    finally:
        assert d.stop() == 0


# --- backfill text ------------------------------------------------------------------------------


def test_metrics_history_is_openmetrics_with_timestamps_ending_eof(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, "--interval", "50ms")
    try:
        push_traffic(d)
        wait_samples(d, 10)
        r = d.request("/metrics/history?label=job=crankshaft&label=instance=car-1%3A9001")
        assert r.status == 200, r.text
        assert r.headers["content-type"].startswith(OPENMETRICS)
        assert r.text.endswith("\n# EOF\n")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        memory = families["crankshaft_memory_usage_mb"].samples
        assert all(s.labels == {"job": "crankshaft", "instance": "car-1:9001"} for s in memory)
        doc = document(d)
        served = {round(float(s.timestamp) * 1000): s.value for s in memory}
        assert all(served[t] == v for t, v in samples(doc) if t in served)
        assert len(memory) >= 10
        for query, fragment in [("label=job", "NAME=VALUE"), ("labels=x=y", "unknown parameter"),
                                ("label=__name__=x", "not a usable label name")]:
            bad = d.request(f"/metrics/history?{query}")
            assert bad.status == 400 and fragment in json.loads(bad.body)["error"], bad.text
        assert d.request("/metrics/history", method="POST", body=b"").status == 405
    finally:
        assert d.stop() == 0


def test_metrics_history_streams_chunked_gzipped_and_to_http_1_0(tmp_path: Path) -> None:
    """The text is sent as it is made: chunked on HTTP/1.1 (gzip when accepted), ended by
    closing on HTTP/1.0; all three carry the same bytes."""
    d = start_daemon(tmp_path, "--interval", "1h")  # one collection: the history holds still
    try:
        wait_samples(d, 1)
        plain = d.request("/metrics/history")
        assert plain.status == 200 and plain.text.endswith("# EOF\n")
        assert plain.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in plain.headers
        zipped = d.request("/metrics/history", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers.get("content-encoding") == "gzip"
        assert gzip.decompress(zipped.body) == plain.body
        with socket.create_connection((d.host, d.port), timeout=10) as s:
            s.sendall(b"GET /metrics/history HTTP/1.0\r\nHost: x\r\n\r\n")
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head, head
        assert b"Transfer-Encoding" not in head  # a 1.0 client knows no chunks
        assert body == plain.body
        assert d.request("/metrics/history", method="HEAD").body == b""
        assert d.request("/healthz").status == 200  # the keep-alive server is still fine
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_fifo_or_link_at_the_state_path_is_moved_aside_and_the_daemon_serves(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO there once hung the daemon for good (blocked in open(), port bound, never
    answering); a link was followed.  Now either is moved aside with one warning."""
    state = tmp_path / "state" / "history.bin"
    state.parent.mkdir()
    victim = tmp_path / "victim.bin"
    victim.write_bytes(a_good_file(tmp_path))
    victim_before = victim.read_bytes()
    if kind == "fifo":
        os.mkfifo(state)
    else:
        state.symlink_to(victim)
    d = start_daemon(tmp_path, "--config", str(write_config(tmp_path / "odd.yaml", state)))
    try:
        wait_samples(d, 2)
        warnings = [line for line in d.log().splitlines() if " WARNING " in line]
        assert len(warnings) == 1, d.log()
        assert "not a regular file" in warnings[0] and "moved to" in warnings[0]
        assert value(exposition(d), "crankshaft_history_restored_samples") == 0.0
    finally:
        assert d.stop() == 0
    assert state.is_file() and not state.is_symlink()
    assert read_state(str(state)) is not None  # the final snapshot took its place
    assert victim.read_bytes() == victim_before
