"""The other side of remote write in tests: a real Prometheus receiver (Debian's 2.42 with
``--web.enable-remote-write-receiver``) and a recording proxy in front of it that can black-hole
requests (accept, never answer) the way a dead cellular link does."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from exporter.remote_write import protocol
from tests.helpers import LocalServer, wait_for
from tests.remote_write import push

SeriesKey = tuple[tuple[str, str], ...]


class Receiver(LocalServer):
    """A Prometheus that accepts remote write; restartable on the same port and data."""

    def __init__(self, workdir: Path, ooo_window: str | None = None,
                 block_duration: str | None = None, web_config: Path | None = None) -> None:
        super().__init__("receiver", workdir)
        config: dict[str, Any] = {"global": {}}
        if ooo_window:
            config["storage"] = {"tsdb": {"out_of_order_time_window": ooo_window}}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.argv = [
            "prometheus",
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-remote-write-receiver",
        ]
        if block_duration:  # hidden 2.42 flags: "an hour behind" becomes minutes behind
            self.argv += [f"--storage.tsdb.min-block-duration={block_duration}",
                          f"--storage.tsdb.max-block-duration={block_duration}"]
        self.web_config = web_config
        if web_config is not None:
            self.argv.append(f"--web.config.file={web_config}")
            self.url = f"https://127.0.0.1:{self.port}"
        self.write_url = f"{self.url}/api/v1/write"

    def start(self) -> Receiver:
        if self.web_config is None:
            self.launch(self.argv)
        else:  # TLS and basic auth: ready once the port takes connections
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
            wait_for(self._listening, "the TLS receiver to listen", 30, interval=0.1)
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def samples(self, selector: str,
                window: str = "1h") -> dict[SeriesKey, list[tuple[int, float]]]:
        """Every raw sample the receiver stored for ``selector``, per series, as
        (timestamp ms, value)."""
        out = {}
        for series in self.query(f"{selector}[{window}]"):
            key = tuple(sorted(series["metric"].items()))
            out[key] = [(round(float(t) * 1000), float(v)) for t, v in series["values"]]
        return out

    def push(self, labels: dict[str, str], timestamp_ms: int, value: float) -> int:
        """Write one sample as another car would; returns the HTTP status."""
        return push(self.write_url, [(labels, [(timestamp_ms, value)])])[0]


class RecordingProxy:
    """Forwards remote-write requests to ``upstream`` and records what each acknowledged
    request carried; ``blackhole()`` makes it accept requests and never answer them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.acknowledged: list[list[tuple[SeriesKey, int]]] = []
        self.statuses: Counter[int] = Counter()
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not proxy._open.is_set():
                    proxy._open.wait(120)  # the link is dead: hold the request, say nothing
                    self.close_connection = True
                    with contextlib.suppress(OSError):  # the sender may have given up first
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, answer = proxy._forward(body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/write"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _forward(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        names = ("Content-Type", "Content-Encoding", protocol.VERSION_HEADER[0])
        request = urllib.request.Request(self.upstream, data=body, method="POST",
                                         headers={k: headers[k] for k in names if k in headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, answer = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read()
        except OSError:
            status, answer = 503, b"receiver unreachable"
        with self._lock:
            self.statuses[status] += 1
            if status < 300:
                self.acknowledged.append([
                    (labels, ts) for labels, samples in protocol.decode(body) for ts, _ in samples
                ])
        return status, answer

    def blackhole(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    def delivered(self, name: str) -> Counter[tuple[SeriesKey, int]]:
        """How many acknowledged requests carried each (series, timestamp) of metric ``name``."""
        with self._lock:
            return Counter(
                (labels, ts) for request in self.acknowledged for labels, ts in request
                if dict(labels).get("__name__") == name
            )

    def close(self) -> None:
        self._open.set()
        self.server.shutdown()
        self.server.server_close()
