"""What a default install does not load: protobuf and the remote-write modules (~4 MiB of
RSS on a car) are imported only once remote write is configured.  (snappy is not checked:
newer prometheus_client imports it for its own exposition.)"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys, exporter.daemon, exporter.cli
print(sorted(m for m in sys.modules
             if m.split(".")[0] == "google" or m.startswith("exporter.remote_write.")))
"""


def test_the_daemon_without_remote_write_does_not_load_protobuf() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
