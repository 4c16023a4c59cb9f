"""Each malformed request of the corpus, sent as raw bytes to the running daemon: a JSON
4xx/501/505 answer, then the connection closed, and the request after it (a smuggling
attempt's second request) never answered."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningDaemon, start_daemon
from tests.helpers import read_until_closed
from tests.http_corpus import MALFORMED


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    d = start_daemon(tmp_path_factory.mktemp("corpus"), "--interval", "1")
    try:
        yield d
    finally:
        d.stop()


def send_and_read_to_close(d: RunningDaemon, data: bytes) -> bytes:
    """Everything the server sends until it closes (a timeout here fails the test: the
    server kept the connection open)."""
    with socket.create_connection((d.host, d.port), timeout=20) as sock:
        # Refused before all of it was sent: what it answered is still read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_until_closed(sock)


@pytest.mark.parametrize(("data", "statuses"),
                         [pytest.param(d, s, id=name) for name, d, s in MALFORMED])
def test_malformed_request_is_refused_and_the_connection_closed(
        svc: RunningDaemon, data: bytes, statuses: tuple[int, ...]) -> None:
    received = send_and_read_to_close(svc, data)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), received[:200]
    assert int(status_line.split()[1]) in statuses, received[:300]
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert len(body) == int(headers["content-length"]), "a second answer followed the first"
    assert json.loads(body)["error"]


def test_the_daemon_still_serves_and_logged_no_traceback(svc: RunningDaemon,
                                                         tmp_path: Path) -> None:
    for _, data, _ in MALFORMED:
        send_and_read_to_close(svc, data)
    r = svc.request("/metrics/alerts")
    assert r.status == 200 and r.json() == []
    assert "Traceback" not in svc.log()
    assert "smuggled" not in svc.log()
