"""A daemon in an environment whose prometheus_client is older than the declared floor
refuses to start, naming the package and version, instead of answering scrapes with 500."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.helpers import free_port


def test_an_older_prometheus_client_stops_the_start(tmp_path: Path) -> None:
    # A distribution found first on sys.path is the one importlib.metadata reports.
    info = tmp_path / "prometheus_client-0.15.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: prometheus_client\n"
                                   "Version: 0.15.0\n")
    path = os.pathsep.join(p for p in (str(tmp_path), str(REPO), os.environ.get("PYTHONPATH"))
                           if p)
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "crankshaft-exporter: prometheus_client 0.15.0 is installed; crankshaft-exporter needs "
        "prometheus_client >= 0.16; not starting"
    ]
