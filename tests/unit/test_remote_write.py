"""Remote write's pure parts: the wire format, the send log, the sender's judgement of what a
receiver answers, the capture of a collection, and the ``remote_write:`` config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.config import ConfigError
from exporter.config.loader import parse_config
from exporter.config.model import RemoteWriteConfig
from exporter.remote_write import protocol, sendlog
from exporter.remote_write.client import Reply
from exporter.remote_write.sender import Sender, is_refusal, target_labels
from exporter.remote_write.sendlog import SendLog
from exporter.remote_write.writer import samples_of

MEM = (("__name__", "mem"),)
CPU = (("__name__", "cpu"), ("core", "0"))


def tick(log: SendLog, ts: int, mem: float = 1.0, cpu: float = 2.0) -> int:
    return log.append(ts, [(MEM, mem), (CPU, cpu)])


# --- wire format ------------------------------------------------------------------------------

def test_write_request_round_trip_keeps_labels_order_and_special_values() -> None:
    series = [
        ((("__name__", "up"), ("job", "x")), [(1000, 1.0), (2000, float("inf"))]),
        ((("__name__", "ünïcode"), ("a", "")), [(-5, -0.0)]),
    ]
    decoded = protocol.decode(protocol.encode(series))
    assert decoded == series
    assert str(decoded[1][1][0][1]) == "-0.0"


# --- send log ---------------------------------------------------------------------------------

def test_log_reads_collections_in_order_in_batches_of_whole_collections(tmp_path: Path) -> None:
    log = SendLog(str(tmp_path))
    seqs = [tick(log, 1000 * i, mem=i) for i in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    batch = log.read(-1, max_samples=4)
    assert [t.seq for t in batch] == [0, 1]
    assert [log.labels(i) for i in batch[1].ids] == [MEM, CPU]
    assert list(batch[1].values) == [1.0, 2.0]
    assert [t.seq for t in log.read(3, max_samples=1)] == [4]  # one whole collection at least
    assert log.read(4, max_samples=100) == []
    assert log.pending(1) == (6, 2000)
    assert log.pending(4) == (0, None)


def test_log_and_cursors_survive_a_reopen_and_a_torn_tail(tmp_path: Path) -> None:
    log = SendLog(str(tmp_path))
    for i in range(3):
        tick(log, 1000 * i, mem=10 + i)
    log.cursor("central").set(0)
    segment = next(p for p in tmp_path.iterdir() if p.name.startswith("seg-"))
    log.close()
    with open(segment, "ab") as f:  # power lost in the middle of the next record
        f.write(b"\x00\x00\x01\x00garbage")
    again = SendLog(str(tmp_path))
    assert again.cursor("central").seq == 0
    assert [(t.seq, t.timestamp_ms, list(t.values)) for t in again.read(0, 100)] == [
        (1, 1000, [11.0, 2.0]), (2, 2000, [12.0, 2.0])]
    assert tick(again, 3000) == 3  # sequence numbers go on where they stopped
    assert [log_labels for log_labels in (again.labels(i) for i in again.read(2, 100)[0].ids)] \
        == [MEM, CPU]


def test_new_collections_come_after_every_cursor_even_without_segments(tmp_path: Path) -> None:
    log = SendLog(str(tmp_path))
    for i in range(3):
        tick(log, i)
    log.cursor("central").set(2)
    log.close()
    for segment in tmp_path.glob("seg-*"):
        segment.unlink()  # removed by hand (or lost): the cursor still says 2
    again = SendLog(str(tmp_path))
    assert tick(again, 10) == 3
    assert [t.timestamp_ms for t in again.read(again.cursor("central").seq, 100)] == [10]


def test_a_damaged_cursor_resends_rather_than_skips(tmp_path: Path) -> None:
    log = SendLog(str(tmp_path))
    tick(log, 0)
    log.cursor("central").set(0)
    log.close()
    path = tmp_path / "cursor-central"
    path.write_bytes(b"\xff" + path.read_bytes()[1:])
    assert SendLog(str(tmp_path)).cursor("central").seq == -1


def test_segments_go_once_every_receiver_has_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sendlog, "SEGMENT_BYTES", 1)  # a segment per collection
    log = SendLog(str(tmp_path))
    a, b = log.cursor("a"), log.cursor("b")
    for i in range(4):
        tick(log, i)
    assert len(list(tmp_path.glob("seg-*"))) == 4
    a.set(2)
    log.trim()
    assert len(list(tmp_path.glob("seg-*"))) == 4  # b has not taken any
    b.set(1)
    log.trim()
    assert len(list(tmp_path.glob("seg-*"))) == 2
    log.forget_others(["a"])  # b is no longer configured: it holds nothing
    assert len(list(tmp_path.glob("seg-*"))) == 1  # the one being written stays
    assert not (tmp_path / "cursor-b").exists()


def test_the_size_cap_drops_the_oldest_and_counts_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sendlog, "SEGMENT_BYTES", 1)
    log = SendLog(str(tmp_path), max_bytes=1)
    log.cursor("central")
    for i in range(3):
        tick(log, i)
    assert log.dropped() == {"central": {"queue_full": 4}}
    assert [t.seq for t in log.read(-1, 100)] == [2]


def test_a_failed_write_leaves_no_torn_record(tmp_path: Path, monkeypatch) -> None:
    log = SendLog(str(tmp_path))
    tick(log, 0)

    def full(fd: int, data: object) -> int:
        os.write(fd, b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sendlog, "_write_all", full)
    with pytest.raises(OSError):
        tick(log, 1)
    monkeypatch.undo()
    assert tick(log, 2) == 1
    log.close()
    assert [t.timestamp_ms for t in SendLog(str(tmp_path)).read(-1, 100)] == [0, 2]


# --- sender -----------------------------------------------------------------------------------

class FakeClient:
    """Answers from ``judge(decoded series)``; records every request."""

    def __init__(self, judge) -> None:
        self.judge = judge
        self.requests: list[list] = []

    def send(self, body: bytes) -> Reply:
        series = protocol.decode(body)
        self.requests.append(series)
        answer = self.judge(series)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def timestamps(series: list) -> set[int]:
    return {ts for _, samples in series for ts, _ in samples}


def sender(tmp_path: Path, judge, now: float = 100.0, **config) -> Sender:
    log = SendLog(str(tmp_path))
    cfg = RemoteWriteConfig(url="http://r/api/v1/write", name="central", instance="car",
                            labels=(("vehicle", "car-17"),), **config)
    return Sender(cfg, log, clock=lambda: now, client=FakeClient(judge))  # type: ignore[arg-type]


def test_delivered_batches_move_the_cursor_and_are_never_sent_again(tmp_path: Path) -> None:
    s = sender(tmp_path, lambda series: Reply(204, ""), max_samples_per_send=4)
    for i in range(3):
        tick(s.log, 90_000 + i)
    assert s.step() is True and s.step() is True and s.step() is None
    sent = [timestamps(r) for r in s.client.requests]
    assert sent == [{90_000, 90_001}, {90_002}]
    assert s.counts.sent == 6 and s.cursor.seq == 2
    labels = [lb for lb, _ in s.client.requests[0]]
    assert labels == [
        (("__name__", "mem"), ("instance", "car"), ("job", "crankshaft"), ("vehicle", "car-17")),
        (("__name__", "cpu"), ("core", "0"), ("instance", "car"), ("job", "crankshaft"),
         ("vehicle", "car-17")),
    ]


def test_unreachable_or_5xx_or_429_is_retried_and_nothing_is_acknowledged(tmp_path: Path) -> None:
    answers = iter([OSError("connection refused"), Reply(503, "busy"), Reply(429, "slow down"),
                    Reply(200, "")])
    s = sender(tmp_path, lambda series: next(answers))
    tick(s.log, 99_000)
    assert [s.step(), s.step(), s.step()] == [False, False, False]
    assert s.cursor.seq == -1 and s.counts.failed == 6
    assert s.step() is True and s.counts.sent == 2
    assert 1.0 <= s.backoff(1) <= 2.0 and s.backoff(30) <= 60.0


def test_a_refused_collection_is_found_dropped_and_counted_the_rest_delivered(
    tmp_path: Path,
) -> None:
    def judge(series: list) -> Reply:
        return Reply(400, "out of bounds") if 95_002 in timestamps(series) else Reply(204, "")

    s = sender(tmp_path, judge)
    for i in range(5):
        tick(s.log, 95_000 + i)
    assert s.step() is True and s.step() is None
    assert s.counts.dropped["refused"] == 2 and s.counts.sent == 8
    delivered = set().union(*(timestamps(r) for r in s.client.requests if 95_002 not in
                              timestamps(r)))
    assert delivered == {95_000, 95_001, 95_003, 95_004}


def test_prometheus_500_too_old_is_a_refusal_not_a_retry() -> None:
    assert is_refusal(Reply(500, "too old sample"))
    assert is_refusal(Reply(400, "out of bounds"))
    assert is_refusal(Reply(401, "Unauthorized"))
    assert not is_refusal(Reply(500, "internal error"))
    assert not is_refusal(Reply(503, ""))
    assert not is_refusal(Reply(429, "too many requests"))


def test_samples_older_than_max_sample_age_are_dropped_unsent(tmp_path: Path) -> None:
    s = sender(tmp_path, lambda series: Reply(204, ""), now=100.0, max_sample_age=10.0)
    tick(s.log, 80_000)  # 20 s old
    tick(s.log, 95_000)
    assert s.step() is True and s.step() is None
    assert timestamps(s.client.requests[0]) == {95_000}
    assert s.counts.dropped["too_old"] == 2 and s.counts.sent == 2


def test_target_labels_give_way_to_the_entry_labels() -> None:
    cfg = RemoteWriteConfig(url="http://r", labels=(("job", "fleet"), ("vehicle", "v")),
                            instance="car")
    assert target_labels(cfg) == (("instance", "car"), ("job", "fleet"), ("vehicle", "v"))


# --- capture ----------------------------------------------------------------------------------

def test_capture_leaves_out_created_samples_and_sorts_labels() -> None:
    counter = CounterMetricFamily("requests", "r", labels=["z", "a"])
    counter.add_metric(["1", "2"], 5.0, created=123.0)
    gauge = GaugeMetricFamily("temp", "t", value=40.0)
    assert list(samples_of([counter, gauge])) == [
        ((("__name__", "requests_total"), ("a", "2"), ("z", "1")), 5.0),
        ((("__name__", "temp"),), 40.0),
    ]


# --- config -----------------------------------------------------------------------------------

def test_a_full_entry_is_read(tmp_path: Path) -> None:
    from tests.tlsfiles import CA

    (tmp_path / "pw").write_text("s3cret\n")
    CA(tmp_path).cert.rename(tmp_path / "ca.pem")
    config = parse_config(
        "remote_write:\n"
        "  - url: https://central:9090/api/v1/write\n"
        "    labels: {vehicle: car-17}\n"
        "    max_sample_age: 30m\n"
        "    queue_config: {max_samples_per_send: 100, min_backoff: 500ms, max_backoff: 2m}\n"
        "    tls_config: {ca_file: ca.pem}\n"
        "    basic_auth: {username: car, password_file: pw}\n",
        base_dir=tmp_path,
    )
    (entry,) = config.remote_write
    assert entry.labels == (("vehicle", "car-17"),)
    assert entry.max_sample_age == 1800 and entry.max_samples_per_send == 100
    assert (entry.min_backoff, entry.max_backoff) == (0.5, 120)
    assert entry.tls_config is not None and entry.tls_config.ca_file == str(tmp_path / "ca.pem")
    assert entry.tls_config.cert_file is None
    assert entry.basic_auth == ("car", "s3cret")
    assert len(entry.name) == 6  # derived from the URL, stable across starts
    assert "s3cret" not in repr(entry)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("- labels: {a: b}", "remote_write[0].url: required"),
        ("- url: ftp://x", "must be an http:// or https:// URL"),
        ("- {url: 'http://x', labels: {__x: y}}", "not a label name"),
        ("- {url: 'http://x', labels: {2x: y}}", "not a label name"),
        ("- {url: 'http://x', max_sample_age: 0}", "max_sample_age"),
        ("- {url: 'http://x', queue_config: {min_backoff: 2m, max_backoff: 1s}}",
         "min_backoff is above max_backoff"),
        ("- {url: 'http://x', basic_auth: {username: u, password: p, password_file: f}}",
         "not both"),
        ("- {url: 'http://x', basic_auth: {username: u}, authorization: {credentials: t}}",
         "cannot both be set"),
        ("- {url: 'http://x', authorization: {credentials: \"a\\nb\"}}", "one word"),
        ("- {url: 'http://x', authorization: {type: Bearer}}", "credentials or credentials_file"),
        ("- {url: 'http://x', urll: 'http://y'}", 'did you mean "url"'),
        ("- {url: 'http://x', name: a}\n  - {url: 'http://y', name: a}", "names must differ"),
        ("- {url: 'http://x', tls_config: {cert_file: c}}", "cert_file and key_file go together"),
        ("- {url: 'https://x', tls_config: {ca_file: /nonexistent/ca.pem}}",
         "cannot use these files"),
    ],
)
def test_bad_entries_are_refused_with_their_line(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"interval: 60s\nremote_write:\n  {entry}\n", "x.yaml")
    text = str(e.value)
    line = 3 + entry.count("\n")  # the entry's own line: the second one, if there are two
    assert message in text and f"x.yaml:{line}:" in text, text


# --- wiring -----------------------------------------------------------------------------------

def test_the_writer_captures_each_collection_and_follows_reloads(tmp_path: Path) -> None:
    from exporter.endpoint import MetricsEndpoint
    from exporter.remote_write.writer import RemoteWriter

    endpoint = MetricsEndpoint()
    a = RemoteWriteConfig(url="http://127.0.0.1:9/a", name="a", min_backoff=60, max_backoff=60)
    b = RemoteWriteConfig(url="http://127.0.0.1:9/b", name="b", min_backoff=60, max_backoff=60)
    writer = RemoteWriter(endpoint, [a], str(tmp_path / "rw"))
    try:
        endpoint.collect_now()  # before start(): captured all the same, sent once started
        writer.start()
        (tick_,) = writer.log.read(-1, 10_000)
        names = {dict(writer.log.labels(i))["__name__"] for i in tick_.ids}
        assert {"crankshaft_memory_usage_mb", "crankshaft_last_collection_timestamp_seconds",
                "process_resident_memory_bytes"} <= names
        assert not any(n.endswith("_created") for n in names)
        writer.reconfigure([a, b])
        assert [s.config.name for s in writer.senders] == ["a", "b"]
        assert all(s._thread is not None for s in writer.senders)
        status = {f.name: f.samples for f in writer.status()}
        pending = status["crankshaft_remote_write_samples_pending"]
        assert [(who["remote_name"], n) for who, n in pending] == [
            ("a", len(tick_.ids)), ("b", len(tick_.ids))]
        writer.reconfigure([])
        assert writer.senders == [] and not list((tmp_path / "rw").glob("cursor-*"))
    finally:
        writer.stop()
        endpoint.close()


def test_an_unusable_state_directory_still_delivers_and_says_why(tmp_path: Path,
                                                                   caplog) -> None:
    from exporter.endpoint import MetricsEndpoint
    from exporter.remote_write.writer import RemoteWriter

    (tmp_path / "file").write_text("")
    endpoint = MetricsEndpoint()
    writer = RemoteWriter(endpoint, [RemoteWriteConfig(url="http://127.0.0.1:9/")],
                          str(tmp_path / "file" / "rw"))
    try:
        assert "cannot be used" in caplog.text and "lost when the exporter stops" in caplog.text
        endpoint.collect_now()
        writer.capture()
        assert writer.log.read(-1, 10_000)
    finally:
        writer.stop()
        endpoint.close()
