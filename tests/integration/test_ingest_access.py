"""Who may write: loopback by default, configured networks, or a bearer token from a file."""

from __future__ import annotations

import ipaddress

import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App, HttpSettings, Request

BATCH = {"latency_ms": {"/api/play": [10.0]}}


def post_from(app: App, ip: str, headers: dict[str, str] | None = None) -> int:
    request = Request("POST", "/metrics/record", "", {"content-type": "application/json",
                                                      **(headers or {})}, ip,
                      b'{"latency_ms": {"/api/play": [10.0]}}')
    return app.handle(request).status


@pytest.mark.parametrize(
    ("ip", "status"),
    [("127.0.0.1", 200), ("127.8.9.10", 200), ("::1", 200), ("::ffff:127.0.0.1", 200),
     ("192.0.2.7", 403), ("2001:db8::1", 403), ("::ffff:192.0.2.7", 403), ("fe80::1%eth0", 403),
     ("not-an-ip", 403)],
)
def test_default_policy_is_loopback_only(ip: str, status: int) -> None:
    assert post_from(App(MetricsEndpoint(sources=[])), ip) == status


def test_configured_networks_and_the_token() -> None:
    ep = MetricsEndpoint(sources=[])
    app = App(ep, HttpSettings(ingest_allow=(ipaddress.ip_network("192.0.2.0/24"),),
                               ingest_token="s3cret"))
    assert post_from(app, "192.0.2.7") == 200
    assert post_from(app, "127.0.0.1") == 403  # loopback is not in the configured list
    assert post_from(app, "198.51.100.1", {"authorization": "Bearer wrong"}) == 403
    assert post_from(app, "198.51.100.1", {"authorization": "Basic s3cret"}) == 403
    assert post_from(app, "198.51.100.1", {"authorization": "Bearer s3cret"}) == 200
    assert ep.get_metrics()["latency_breakdown"]["/api/play"]["count"] == 2


def test_live_daemon_refuses_and_admits_writers(tmp_path, daemon_factory) -> None:
    (tmp_path / "token").write_text("t0ken-from-file\n")
    config = tmp_path / "exporter.yaml"
    config.write_text('interval: 1s\nhttp:\n  ingest_allow: ["192.0.2.0/24"]\n'
                      "  ingest_token_file: token\n")
    d = daemon_factory("--config", str(config))
    refused = d.post_json("/metrics/record", BATCH)
    assert refused.status == 403
    assert "not allowed" in refused.json()["error"]
    assert d.post_json("/metrics/record", BATCH, {"Authorization": "Bearer nope"}).status == 403
    ok = d.post_json("/metrics/record", BATCH, {"Authorization": "Bearer t0ken-from-file"})
    assert ok.status == 200, ok.body
    assert ok.json()["accepted"]["latency_observations"] == 1
    breakdown = d.request("/metrics").json()["latency_breakdown"]
    assert breakdown["/api/play"]["count"] == 1  # only the admitted batch was recorded
