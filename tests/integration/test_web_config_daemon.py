"""``--web.config.file`` and ``http.web_config_file`` on the real daemon: basic auth on every
route (the dashboard and its assets included), the configured headers on every answer, the
dashboard over TLS with basic auth, exit 78 for an invalid file at start, ``check-config``, and
SIGHUP reload semantics (a bad file keeps the running web config)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, RunningDaemon
from tests.helpers import poll, wait_for
from tests.integration.test_web_dashboard import CSP, STATIC, parse, urls_of
from tests.tlsfiles import (
    CA,
    basic,
    bcrypt_hash,
    client_context,
    https_get,
    write_web_config,
)

ROUTES = ["/metrics", "/metrics/summary", "/metrics/alerts", "/metrics/prometheus",
          "/metrics/csv", "/healthz", "/openapi.yaml", "/", "/static/app.js", "/nope"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def web_file(tmp_path: Path) -> Path:
    return write_web_config(tmp_path / "web.yml", {
        "basic_auth_users": {"prom": bcrypt_hash("s3cret")},
        "http_server_config": {"headers": {"X-Frame-Options": "deny",
                                           "X-Content-Type-Options": "nosniff"}},
    })


def test_basic_auth_covers_every_route_and_headers_every_answer(daemon_factory,
                                                                web_file: Path) -> None:
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web_file))
    for route in ROUTES:
        r = d.request(route)
        assert r.status == 401, (route, r.status)
        assert r.headers["www-authenticate"].startswith("Basic"), route
        assert r.json() == {"error": "this exporter needs a user name and password"}
        assert r.headers["x-frame-options"] == "deny"
        assert d.request(route, headers=basic("prom", "wrong")).status == 401
        assert d.request(route, headers=basic("nobody", "s3cret")).status == 401
    wait_for(lambda: d.request("/healthz", headers=basic("prom", "s3cret")).status == 200,
             "the first collection")
    for route in ROUTES:
        r = d.request(route, headers=basic("prom", "s3cret"))
        assert r.status == (404 if route == "/nope" else 200), (route, r.status)
        assert r.headers["x-frame-options"] == "deny"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "web config" in d.log() and "basic auth for 1 user" in d.log()


def test_dashboard_over_tls_with_basic_auth(daemon_factory, tmp_path: Path) -> None:
    """What a browser at https://host:9001/ does: the page, every relative URL in it and
    every JSON route its script fetches, resolved against the page, all over TLS with the
    same credentials; none of them without."""
    ca = CA(tmp_path / "ca")
    server = ca.issue("server")
    web = write_web_config(tmp_path / "web.yml", {
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key)},
        "basic_auth_users": {"prom": bcrypt_hash("s3cret")},
        "http_server_config": {"headers": {"X-Frame-Options": "deny",
                                           "Content-Security-Policy": "default-src 'none'"}},
    })
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web))
    ctx, auth = client_context(ca), basic("prom", "s3cret")
    wait_for(lambda: https_get(d.port, "/healthz", ctx, auth)[0] == 200, "the first collection")
    status, headers, body = https_get(d.port, "/", ctx, auth)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CSP  # the page's own policy wins
    status, headers, _ = https_get(d.port, "/metrics/summary", ctx, auth)
    assert status == 200 and headers["content-security-policy"] == "default-src 'none'"
    assert headers["x-frame-options"] == "deny"
    page_urls = urls_of(parse(body.decode()))
    script = (STATIC / "app.js").read_text()
    fetched = {re.sub(r"\$\{[^}]*\}", "60", url)  # `metrics?last_n=${lastN}`
               for _, url in re.findall(r"getJSON\(\s*([`\"'])(.*?)\1", script)}
    assert "metrics?last_n=60" in fetched and "healthz" in fetched
    assert any(u.startswith("static/app.js") for u in page_urls)
    for url in [*page_urls, *sorted(fetched)]:
        assert not url.startswith("/") and "://" not in url, url
        path = "/" + url  # relative to the page at /
        status, headers, _ = https_get(d.port, path, ctx, auth)
        assert status == 200, (path, status)
        assert headers["x-frame-options"] == "deny", path
        status, headers, _ = https_get(d.port, path, ctx)
        assert status == 401 and headers["www-authenticate"].startswith("Basic"), path


def test_basic_auth_and_the_ingest_token_together(daemon_factory, tmp_path: Path,
                                                  web_file: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(f"interval: 1s\nhttp:\n  web_config_file: {web_file.name}\n"
                   "  ingest_token_file: token\n")
    d: RunningDaemon = daemon_factory("--config", str(cfg))
    batch = {"active_connections": 5}
    assert d.post_json("/metrics/record", batch).status == 401  # no user
    r = d.post_json("/metrics/record", batch, basic("prom", "s3cret"))
    assert r.status == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = d.post_json("/metrics/record", batch, {**basic("prom", "s3cret"),
                                               "X-Ingest-Token": "tok"})
    assert r.status == 200, r.body


def test_invalid_web_config_at_start_exits_78_naming_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("basic_auth_users:\n  prom: not-a-hash\n")
    result = run_cli("run", "--listen", "127.0.0.1:0", "--web.config.file", str(bad))
    assert result.returncode == 78, result.stderr
    assert f"{bad}:2: basic_auth_users.prom: not a bcrypt hash" in result.stderr
    assert "Traceback" not in result.stderr
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text("http:\n  web_config_file: web.yml\n")
    result = run_cli("run", "--listen", "127.0.0.1:0", "--config", str(cfg))
    assert result.returncode == 78, result.stderr
    assert f"{bad}:2: basic_auth_users.prom:" in result.stderr


def test_check_config_validates_the_web_config(tmp_path: Path, web_file: Path) -> None:
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text("http:\n  web_config_file: web.yml\n")
    assert run_cli("check-config", str(cfg)).returncode == 0
    ok = run_cli("check-config", "--web.config.file", str(web_file))
    assert ok.returncode == 0 and "valid" in ok.stdout
    web_file.write_text("tls_server_config:\n  cert_file: nothere.pem\n")
    for args in ([str(cfg)], ["--web.config.file", str(web_file)]):
        result = run_cli("check-config", *args)
        assert result.returncode == 78
        assert result.stderr.strip() == (f"{web_file}:1: tls_server_config.key_file: missing "
                                          "one of key or key_file")


def reload_ok(d: RunningDaemon, auth: dict[str, str]) -> float:
    text = d.request("/metrics/prometheus", headers=auth).text
    line = next(ln for ln in text.splitlines()
                if ln.startswith("crankshaft_config_last_reload_successful "))
    return float(line.split()[1])


def test_sighup_with_a_bad_web_config_keeps_the_running_one(daemon_factory, tmp_path: Path,
                                                            web_file: Path) -> None:
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text("interval: 1s\nhttp:\n  web_config_file: web.yml\n")
    d: RunningDaemon = daemon_factory("--config", str(cfg))
    old = basic("prom", "s3cret")
    assert d.request("/metrics/summary", headers=old).status == 200
    web_file.write_text("basic_auth_users:\n  prom: broken\n")
    os.kill(d.pid, signal.SIGHUP)
    wait_for(lambda: "configuration reload failed" in d.log(), "the rejected reload")
    assert f"{web_file}:2: basic_auth_users.prom: not a bcrypt hash" in d.log()
    assert d.request("/metrics/summary", headers=old).status == 200  # still the old config
    assert reload_ok(d, old) == 0.0
    write_web_config(web_file, {"basic_auth_users": {"prom": bcrypt_hash("n3w")}})
    os.kill(d.pid, signal.SIGHUP)
    new = basic("prom", "n3w")
    poll(lambda: d.request("/metrics/summary", headers=new).status, lambda s: s == 200,
         "the new password to be accepted")
    assert d.request("/metrics/summary", headers=old).status == 401
    assert reload_ok(d, new) == 1.0


def test_web_config_change_on_disk_applies_without_a_signal(daemon_factory,
                                                            web_file: Path) -> None:
    d: RunningDaemon = daemon_factory("--interval", "1", "--web.config.file", str(web_file))
    assert d.request("/metrics/summary", headers=basic("prom", "s3cret")).status == 200
    write_web_config(web_file, {"basic_auth_users": {"scraper": bcrypt_hash("other")}})
    poll(lambda: d.request("/metrics/summary", headers=basic("scraper", "other")).status,
         lambda s: s == 200, "the changed file to be read")
    assert d.request("/metrics/summary", headers=basic("prom", "s3cret")).status == 401
    web_file.write_text("basic_auth_users: [\n")
    wait_for(lambda: "web config change rejected" in d.log(), "the bad change to be reported")
    assert d.request("/metrics/summary", headers=basic("scraper", "other")).status == 200
    assert reload_ok(d, basic("scraper", "other")) == 0.0


def test_a_web_config_read_on_its_own_does_not_hide_a_failed_reload(
        daemon_factory, tmp_path: Path, web_file: Path) -> None:
    """crankshaft_config_last_reload_successful stays 0 while exporter.yaml is broken, even
    when the web config (a renewed password or certificate) is re-read meanwhile."""
    cfg = tmp_path / "exporter.yaml"
    good = "interval: 1s\nhttp:\n  web_config_file: web.yml\n"
    cfg.write_text(good)
    d: RunningDaemon = daemon_factory("--config", str(cfg))
    old = basic("prom", "s3cret")
    cfg.write_text(good + "interval: nope\n")
    os.kill(d.pid, signal.SIGHUP)
    wait_for(lambda: "configuration reload failed" in d.log(), "the rejected reload")
    assert reload_ok(d, old) == 0.0
    write_web_config(web_file, {"basic_auth_users": {"prom": bcrypt_hash("n3w")}})
    new = basic("prom", "n3w")
    poll(lambda: d.request("/metrics/summary", headers=new).status, lambda s: s == 200,
         "the changed web config to be read")
    assert reload_ok(d, new) == 0.0  # exporter.yaml is still the broken one
    cfg.write_text(good)
    os.kill(d.pid, signal.SIGHUP)
    poll(lambda: reload_ok(d, new), lambda v: v == 1.0, "the repaired reload")
