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


def app_with(allow: tuple[str, ...] | None = None, token: str | None = None) -> App:
    if allow is None:
        return App(MetricsEndpoint(sources=[]), HttpSettings(ingest_token=token))
    nets = tuple(ipaddress.ip_network(n) for n in allow)
    settings = HttpSettings(ingest_allow=nets, ingest_allow_listed=True, ingest_token=token)
    return App(MetricsEndpoint(sources=[]), settings)


def answer(app: App, ip: str, headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    request = Request("POST", "/metrics/record", "", {"content-type": "application/json",
                                                      **(headers or {})}, ip,
                      b'{"latency_ms": {"/api/play": [10.0]}}')
    response = app.handle(request)
    return response.status, response.headers.get("WWW-Authenticate")


BEARER = 'Bearer realm="crankshaft-exporter"'
INVALID = BEARER + ', error="invalid_token"'

# (ingest_allow as the user wrote it or None, token, client, headers) -> (status, challenge)
PRECEDENCE = [
    # No token: the listed networks, or loopback when none were listed; others 403.
    (None, None, "127.0.0.1", {}, 200, None),
    (None, None, "192.0.2.7", {}, 403, None),
    (None, None, "192.0.2.7", {"authorization": "Bearer anything"}, 403, None),
    (("192.0.2.0/24",), None, "192.0.2.7", {}, 200, None),
    (("192.0.2.0/24",), None, "127.0.0.1", {}, 403, None),
    ((), None, "127.0.0.1", {}, 403, None),
    # A token and no listed networks: every client needs it, loopback included.
    (None, "s3cret", "127.0.0.1", {}, 401, BEARER),
    (None, "s3cret", "::1", {}, 401, BEARER),
    (None, "s3cret", "127.0.0.1", {"authorization": "Bearer s3cret"}, 200, None),
    (None, "s3cret", "198.51.100.1", {"authorization": "Bearer s3cret"}, 200, None),
    (None, "s3cret", "198.51.100.1", {"x-ingest-token": "s3cret"}, 200, None),
    (None, "s3cret", "127.0.0.1", {"authorization": "Bearer wrong"}, 401, INVALID),
    (None, "s3cret", "127.0.0.1", {"authorization": "bearer  s3cret "}, 200, None),
    (None, "s3cret", "127.0.0.1", {"authorization": "Basic s3cret"}, 401, BEARER),
    (None, "s3cret", "127.0.0.1", {"x-ingest-token": "s3cre"}, 401, INVALID),
    # A token and listed networks: those networks write without it, the rest need it.
    (("192.0.2.0/24",), "s3cret", "192.0.2.7", {}, 200, None),
    (("192.0.2.0/24",), "s3cret", "127.0.0.1", {}, 401, BEARER),
    (("192.0.2.0/24",), "s3cret", "198.51.100.1", {"authorization": "Bearer s3cret"}, 200,
     None),
    # A wrong token is refused even from a listed network: a credential was offered.
    (("192.0.2.0/24",), "s3cret", "192.0.2.7", {"authorization": "Bearer nope"}, 401,
     INVALID),
    (("127.0.0.0/8",), "s3cret", "127.0.0.1", {}, 200, None),
]


@pytest.mark.parametrize(("allow", "token", "ip", "headers", "status", "challenge"),
                         PRECEDENCE)
def test_token_and_network_precedence(allow, token, ip, headers, status, challenge) -> None:
    assert answer(app_with(allow, token), ip, headers) == (status, challenge)


def test_live_daemon_refuses_and_admits_writers(tmp_path, daemon_factory) -> None:
    (tmp_path / "token").write_text("t0ken-from-file\n")
    config = tmp_path / "exporter.yaml"
    config.write_text('interval: 1s\nhttp:\n  ingest_token_file: token\n')
    d = daemon_factory("--config", str(config))
    refused = d.post_json("/metrics/record", BATCH)  # from loopback, without the token
    assert refused.status == 401
    assert refused.headers["www-authenticate"] == BEARER
    assert "token" in refused.json()["error"]
    wrong = d.post_json("/metrics/record", BATCH, {"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    ok = d.post_json("/metrics/record", BATCH, {"Authorization": "Bearer t0ken-from-file"})
    assert ok.status == 200, ok.body
    assert ok.json()["accepted"]["latency_observations"] == 1
    breakdown = d.request("/metrics").json()["latency_breakdown"]
    assert breakdown["/api/play"]["count"] == 1  # only the admitted batch was recorded


def test_live_daemon_listed_networks_without_a_token(tmp_path, daemon_factory) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text('interval: 1s\nhttp:\n  ingest_allow: ["192.0.2.0/24"]\n')
    d = daemon_factory("--config", str(config))
    refused = d.post_json("/metrics/record", BATCH)
    assert refused.status == 403
    assert "www-authenticate" not in refused.headers
    assert "not allowed" in refused.json()["error"]
