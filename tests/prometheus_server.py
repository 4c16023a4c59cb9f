"""A real Prometheus (Debian's package) run by a test: own config, own port on 127.0.0.1, own
data dir; stopped by PID.  Recipe and timings: shared/notes/real-components.md."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import LocalServer, wait_for
from tests.helpers import free_port as free_port  # the benchmarks import it from here


class PrometheusServer(LocalServer):
    """``with PrometheusServer(tmp_path, scrape_configs, rule_files) as prom: prom.query(...)``"""

    def __init__(
        self,
        workdir: Path,
        scrape_configs: list[dict[str, Any]],
        rule_files: list[str] | None = None,
        alertmanager: str | None = None,
        binary: str = "prometheus",
        config: dict[str, Any] | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        """``config``: a whole configuration instead of the one built from the arguments
        (its rule files relative to the server's directory); ``flags``: more command-line
        flags, such as ``--web.enable-remote-write-receiver``."""
        super().__init__("prometheus", workdir)
        self.flags = flags
        if config is not None:
            (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
            self.binary = binary
            return
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        if rule_files:
            config["rule_files"] = rule_files
        if alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.binary = binary

    def __enter__(self) -> PrometheusServer:
        self.launch(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--rules.alert.resend-delay=1s",
                *self.flags,
            ]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {doc}")
        return doc["data"]

    @property
    def write_url(self) -> str:
        """The remote-write receiver (``--web.enable-remote-write-receiver``)."""
        return f"{self.url}/api/v1/write"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (empty if nothing matches yet)."""
        return self.api("query", query=expr)["result"]

    def wait_for_query(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Poll until the query returns data (the first scrape comes ~6 s after start)."""
        return wait_for(lambda: self.query(expr), f"data for {expr}", timeout, interval=0.2)
