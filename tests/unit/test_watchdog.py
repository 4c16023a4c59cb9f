"""The watchdog feed and sd_notify, without systemd.

The heartbeat is called from the collector loop itself, so a collector stuck in a source
must go silent (and systemd's watchdog restarts the service); once unstuck it resumes.
Asserted with counters and events: "no heartbeat while blocked" is a bounded wait on an
event that must stay unset, never a duration.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping

import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.sdnotify import SystemdNotifier
from exporter.sources.base import Source

PERIOD_S = 0.05
DEADLINE_S = 10.0


class StuckSource(Source):
    """Collects at once until ``block()``; then hangs in collect() until ``release()``."""

    name = "stuck"

    def __init__(self) -> None:
        self.entered = threading.Event()  # set when collect() starts hanging
        self._gate = threading.Event()
        self._gate.set()
        self.calls = 0

    def block(self) -> None:
        self.entered.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def collect(self) -> Mapping[str, float]:
        self.calls += 1
        if not self._gate.is_set():
            self.entered.set()
            assert self._gate.wait(DEADLINE_S * 3), "the test never released the source"
        return {"memory_usage": 10.0}


class Heartbeats:
    """Counts heartbeat calls; ``beat`` is set by each one; ``reached(n)`` awaits a count."""

    def __init__(self) -> None:
        self.count = 0
        self.threads: set[str] = set()
        self.beat = threading.Event()
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self.threads.add(threading.current_thread().name)
            self.beat.set()
            self._cond.notify_all()

    def reached(self, n: int, timeout: float = DEADLINE_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= n, timeout)


def start_beating(ep: MetricsEndpoint, interval_ms: int = 3_600_000) -> Heartbeats:
    """Count the endpoint's heartbeats (every PERIOD_S) and start collecting; by default
    one collection now, the next in an hour."""
    beats = Heartbeats()
    ep.set_heartbeat(beats, PERIOD_S)
    ep.start_collection(interval_ms)
    return beats


def assert_no_heartbeat(beats: Heartbeats, why: str | None = None) -> int:
    """Ten heartbeat periods pass without a beat; the count, unchanged, is returned."""
    count = beats.count
    beats.beat.clear()
    assert not beats.beat.wait(10 * PERIOD_S), why
    assert beats.count == count
    return count


@pytest.fixture
def endpoint() -> Iterator[tuple[MetricsEndpoint, StuckSource]]:
    source = StuckSource()
    ep = MetricsEndpoint(sources=[source])
    try:
        yield ep, source
    finally:
        source.release()
        ep.close()


def test_heartbeat_runs_from_the_collector_loop_between_collections(endpoint) -> None:
    ep, source = endpoint
    beats = start_beating(ep)
    assert beats.reached(5), beats.count
    assert source.calls == 1  # heartbeats do not wait for (or cause) collections
    assert beats.threads == {"crankshaft-collector"}


def test_a_stuck_collector_stops_the_heartbeat_until_released(endpoint) -> None:
    ep, source = endpoint
    beats = start_beating(ep, 20)
    assert beats.reached(3), beats.count

    source.block()
    assert source.entered.wait(DEADLINE_S), "the collector never entered the source"
    # The loop thread is now inside collect(): it can no longer beat.  A bounded wait on an
    # event that must NOT be set.
    stuck_at = assert_no_heartbeat(beats, "heartbeat while the collector was stuck")

    source.release()
    assert beats.beat.wait(DEADLINE_S), "heartbeat did not resume after the source returned"
    assert beats.reached(stuck_at + 3)


def test_clearing_the_heartbeat_stops_it(endpoint) -> None:
    ep, _ = endpoint
    beats = start_beating(ep)
    assert beats.reached(2)
    ep.set_heartbeat(None, PERIOD_S)
    # Whatever beat was in flight when it was cleared has happened after one more wake-up.
    ep.set_collection_interval(3_600_000)
    settled = beats.count
    beats.beat.clear()
    if beats.beat.wait(10 * PERIOD_S):  # at most one straggler already past the check
        assert_no_heartbeat(beats)
    else:
        assert beats.count == settled


def test_a_failing_heartbeat_does_not_stop_the_loop(endpoint) -> None:
    ep, _ = endpoint
    beats = Heartbeats()
    failures = threading.Event()

    def flaky() -> None:
        beats()
        if beats.count % 2:
            failures.set()
            raise OSError("notify socket gone")

    ep.set_heartbeat(flaky, PERIOD_S)
    ep.start_collection(3_600_000)
    assert failures.wait(DEADLINE_S)
    assert beats.reached(4)
    assert ep.is_collecting()


def test_stop_collection_ends_the_heartbeat(endpoint) -> None:
    ep, _ = endpoint
    beats = start_beating(ep)
    assert beats.reached(2)
    ep.stop_collection()  # joins the collector thread: no beat can follow
    assert_no_heartbeat(beats)


# --- SystemdNotifier ------------------------------------------------------------------------


class Listener:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.settimeout(DEADLINE_S)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def fields(self) -> dict[str, str]:
        raw = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in raw.split("\n"))

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(DEADLINE_S)
        return True


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[str, Listener]]:
    if request.param == "path":
        with tempfile.TemporaryDirectory(prefix="cs-notify-", dir="/tmp") as folder:
            address = os.path.join(folder, "notify.sock")
            s = Listener(address)
            yield address, s
            s.sock.close()
    else:
        address = f"@crankshaft-unit-{uuid.uuid4().hex}"
        s = Listener(address)
        yield address, s
        s.sock.close()


def test_notifier_sends_every_message_kind(listener) -> None:
    address, s = listener
    n = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready("serving on 127.0.0.1:9001")
    assert s.fields() == {
        "READY": "1",
        "STATUS": "serving on 127.0.0.1:9001",
        "MAINPID": str(os.getpid()),
    }
    assert n.reloading()
    assert s.fields()["RELOADING"] == "1"
    assert n.watchdog()
    assert s.fields() == {"WATCHDOG": "1"}
    assert n.status("collecting")
    assert s.fields() == {"STATUS": "collecting"}
    assert n.stopping()
    assert s.fields()["STOPPING"] == "1"


def test_abstract_address_is_the_nul_prefixed_name() -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "@some/name"})
    assert n.address == "\0some/name"


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative.sock"}])
def test_notifier_without_a_usable_socket_is_a_no_op(env: dict[str, str]) -> None:
    n = SystemdNotifier(env)
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False


def test_notifier_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not SystemdNotifier().enabled
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    assert SystemdNotifier().enabled


@pytest.mark.parametrize(
    "address",
    [
        "/nonexistent-dir/notify.sock",
        "@crankshaft-nobody-listens-" + "z" * 20,
        "/" + "x" * 200,  # longer than sun_path
    ],
)
def test_notifier_never_raises_when_the_socket_is_unreachable(address: str) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "600000"}, 0.6),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "600000", "WATCHDOG_PID": str(os.getpid())}, 0.6),
        ({"WATCHDOG_USEC": "600000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "600000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "-600000"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": "0.5"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_seconds(env: dict[str, str], expected: float | None) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "@x", **env})
    assert n.watchdog_seconds() == expected


def test_watchdog_pid_is_compared_with_the_pid_at_call_time(monkeypatch) -> None:
    """systemd names the main pid; a forked child inheriting the environment must not ping."""
    n = SystemdNotifier({"WATCHDOG_USEC": "600000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_seconds() == 0.6
    monkeypatch.setattr(os, "getpid", lambda: 424242)
    assert n.watchdog_seconds() is None


def test_a_delivered_message_is_one_datagram(listener) -> None:
    address, s = listener
    n = SystemdNotifier({"NOTIFY_SOCKET": address})
    n.notify(READY=1, STATUS="a")
    assert s.fields() == {"READY": "1", "STATUS": "a"}
    assert not s.pending()
