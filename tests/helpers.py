"""Helpers shared by the tests: polling with a deadline, free loopback ports, and server
processes that a test starts on 127.0.0.1 and stops by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

DEADLINE_S = 20.0


def poll(fetch: Callable[[], T], condition: Callable[[T], Any], what: str,
         timeout: float = DEADLINE_S, interval: float = 0.02) -> T:
    """Fetch until ``condition`` holds for the value, which is returned; fail with the last
    value after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if condition(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last: {str(value)[:500]}")
        time.sleep(interval)


def wait_for(condition: Callable[[], T], what: str, timeout: float = DEADLINE_S,
             interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy; that value is returned."""
    return poll(condition, bool, what, timeout, interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a reset counts as the end too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM by PID, then wait; SIGKILL only if it does not end in time."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class LocalServer:
    """A server binary run by a test with its own directory and its own free port on
    127.0.0.1; ready once ``/-/ready`` answers 200 (Prometheus, Alertmanager); stopped by
    PID."""

    def __init__(self, name: str, workdir: Path, port: int | None = None) -> None:
        self.name = name
        self.dir = workdir / f"{name}-{time.monotonic_ns()}"
        self.dir.mkdir()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def launch(self, argv: list[str], timeout: float = 30) -> None:
        """Start ``argv`` with its output in the log and wait until it is ready."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, f"{self.name} to become ready", timeout, interval=0.2)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.read_log()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# Burns a little CPU first when asked (so its CPU time is not 0), then blocks on stdin:
# while blocked, none of its numbers (CPU time, resident set, threads, descriptors, I/O,
# context switches) move between two reads.
_SLEEPER = r"""
import sys, time
end = time.process_time() + float(sys.argv[1])
while time.process_time() < end:
    pass
print("ready", flush=True)
sys.stdin.readline()
"""


class Sleeper:
    """A child Python process that is asleep (blocked on stdin) once constructed; ``argv``
    lands on its command line (a marker for the cmdline finder)."""

    def __init__(self, *argv: str, burn_cpu: bool = False) -> None:
        import psutil

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SLEEPER, "0.05" if burn_cpu else "0", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        # "ready" is printed just before the read: wait until it is really blocked.
        wait_for(
            lambda: psutil.Process(self.pid).status() == psutil.STATUS_SLEEPING,
            "the child to block on stdin",
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

