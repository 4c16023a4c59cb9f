"""The dashboard at GET / and its assets, against the real daemon (a subprocess).

What a browser needs and what the brief promises: HTML with ``Content-Security-Policy:
default-src 'self'``, nothing inline for that policy to block, only relative URLs (so a
reverse-proxy prefix works), every asset served with its content type and caching headers,
gzip when asked, and no URL of another host in anything served.  The page drawing the
daemon's data in a real browser is tests/real/test_web_dashboard_browser.py.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

import exporter
from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App
from tests.conftest import REPO, RunningDaemon, start_daemon
from tests.helpers import wait_for

WEB = Path(exporter.__file__).parent / "web"
STATIC = WEB / "static"
CSP = "default-src 'self'"
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)
EXPECTED_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
# Absolute URLs allowed in served files, each because it is never requested: uPlot's
# provenance banner comment (the vendored file is kept byte for byte) and SVG's XML
# namespace name.
NOT_REQUESTS = {
    "https://github.com/leeoniya/uPlot",
    "http://www.w3.org/2000/svg",
}
ABSOLUTE_URL = re.compile(rb"""(?:[a-z][a-z0-9+.-]*:)?//[^\s"'`<>)]+""", re.IGNORECASE)


class Markup(HTMLParser):
    """Every tag with its attributes, and whether any inline script, style or handler is
    present (a CSP of default-src 'self' would block them)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("script", "style"):
            self._in = tag
        if tag == "script" and not a.get("src"):
            self.inline.append("<script> without src")
        self.inline += [f"{tag} {k}=" for k in a if k == "style" or k.startswith("on")]
        self.inline += [f"{tag} {k}=javascript:" for k, v in a.items()
                        if v and v.strip().lower().startswith("javascript:")]

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style" or (self._in == "script" and data.strip()):
            self.inline.append(f"inline <{self._in}> content")


def parse(html: str) -> Markup:
    m = Markup()
    m.feed(html)
    return m


def urls_of(markup: Markup) -> list[str]:
    return [v for _, a in markup.tags for k, v in a.items() if k in ("src", "href") and v]


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    d = start_daemon(tmp_path_factory.mktemp("dashboard"), "--interval", "0.5")
    try:
        # The page links /healthz, which answers 503 until the first collection.
        wait_for(lambda: d.request("/healthz").status == 200, "the first collection")
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def page(live: RunningDaemon) -> Markup:
    r = live.request("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status == 200
    return parse(r.text)


def test_root_is_html_with_a_self_only_content_security_policy(live: RunningDaemon) -> None:
    for accept in (BROWSER_ACCEPT, "*/*", "application/json"):
        r = live.request("/", headers={"Accept": accept})
        assert r.status == 200
        assert media_type(r.headers["content-type"]) == "text/html"
        assert "charset=utf-8" in r.headers["content-type"]
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-cache"
        assert r.text.lstrip().lower().startswith("<!doctype html>")
    head = live.request("/", "HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-security-policy"] == CSP
    assert int(head.headers["content-length"]) == len(live.request("/").body)
    # The JSON routes did not move.
    assert media_type(live.request("/metrics").headers["content-type"]) == "application/json"
    assert live.request("/index.html").status == 404


def test_page_names_the_exporter_its_version_and_target(live: RunningDaemon) -> None:
    text = live.request("/").text
    assert "crankshaft-exporter" in text
    assert f'<span class="version">{exporter.__version__}</span>' in text
    assert '<span id="target">self</span>' in text  # the default target


def test_page_has_nothing_inline_for_the_policy_to_block(page: Markup) -> None:
    assert page.inline == []
    scripts = [a["src"] for t, a in page.tags if t == "script"]
    assert len(scripts) == 2 and all(s and s.startswith("static/") for s in scripts)


def test_every_url_in_the_page_is_relative_and_answers(live: RunningDaemon, page: Markup) -> None:
    urls = urls_of(page)
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
        r = live.request("/" + url)
        assert r.status == 200, (url, r.status)


def test_page_links_every_get_route_of_the_openapi_description(
    live: RunningDaemon, page: Markup
) -> None:
    spec = yaml.safe_load(live.request("/openapi.yaml").body)
    routes = {p.lstrip("/") for p, item in spec["paths"].items()
              if "get" in item and p != "/" and not p.startswith("/static/")}
    links = {a["href"] for t, a in page.tags if t == "a" and a.get("href")}
    assert routes <= links, routes - links


def test_assets_have_their_types_and_are_cacheable_only_under_their_version(
    live: RunningDaemon, page: Markup
) -> None:
    versioned = {urlsplit(u).path: parse_qs(urlsplit(u).query)["v"][0]
                 for u in urls_of(page) if u.startswith("static/")}
    shipped = {f"static/{p.name}" for p in STATIC.iterdir() if p.is_file()}
    # Every shipped file is referenced by the page (the licence from the credits line).
    assert set(versioned) == shipped
    for path, version in versioned.items():
        file = WEB / path
        r = live.request(f"/{path}?v={version}")
        assert r.status == 200
        assert media_type(r.headers["content-type"]) == EXPECTED_TYPES[file.suffix], path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.body == file.read_bytes()
        for stale in (f"/{path}", f"/{path}?v=0000", f"/{path}?v="):
            assert live.request(stale).headers["cache-control"] == "no-cache", stale
        head = live.request(f"/{path}?v={version}", "HEAD")
        assert head.status == 200 and head.body == b""
    assert live.request("/static/missing.js").status == 404
    assert live.request("/static/").status == 404


def test_assets_are_gzipped_when_the_client_accepts_it(live: RunningDaemon) -> None:
    for name in ("uPlot.iife.min.js", "app.js", "style.css"):
        r = live.request(f"/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert r.headers.get("content-encoding") == "gzip", name
        assert "Accept-Encoding" in r.headers["vary"]
        assert gzip.decompress(r.body) == (STATIC / name).read_bytes()
    r = live.request("/", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip"
    assert gzip.decompress(r.body).startswith(b"<!doctype html>")


def test_nothing_served_names_another_host(live: RunningDaemon, page: Markup) -> None:
    bodies = {"/": live.request("/").body}
    for url in urls_of(page):
        if url.startswith("static/"):
            bodies[url] = live.request("/" + url).body
    assert len(bodies) == 1 + len(list(STATIC.iterdir()))
    for url, body in bodies.items():
        if url.endswith(".txt"):
            continue  # the licence text: shown to people, never loaded by the page
        found = {m.group(0).decode() for m in ABSOLUTE_URL.finditer(body)}
        # Markup and scripts may hold "//" in comments or regular expressions; only
        # something with a host after it is a URL.
        hosts = {u for u in found if re.match(r"(?:[a-z][a-z0-9+.-]*:)?//[a-z0-9-]+\.", u, re.I)}
        assert hosts <= NOT_REQUESTS, (url, hosts - NOT_REQUESTS)
        assert b"@import" not in body, url
    # The one allowed absolute URL in a script sits in its leading banner comment.
    uplot = bodies[next(u for u in bodies if "uPlot.iife.min.js" in u)]
    assert uplot.startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */\n")
    assert uplot.count(b"://") == 1


def test_the_script_fetches_only_relative_urls() -> None:
    """Every fetch in app.js goes through getJSON with a relative literal: no leading slash
    (which would escape a reverse-proxy prefix), no scheme."""
    source = (STATIC / "app.js").read_text()
    assert source.count("fetch(") == 1 and "fetch(url" in source
    calls = re.findall(r"getJSON\(\s*([`\"'])(.*?)\1", source)
    assert {url.split("?")[0] for _, url in calls} == {
        "healthz", "metrics/summary", "metrics/alerts", "metrics"}
    assert "XMLHttpRequest" not in source and "WebSocket" not in source


def test_the_routes_table_lists_the_dashboard() -> None:
    routes = App(MetricsEndpoint(sources=[])).routes
    assert set(routes["/"]) == {"GET"}
    assert {p for p in routes if p.startswith("/static/")} == {
        f"/static/{p.name}" for p in STATIC.iterdir() if p.is_file()}


def test_a_built_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """`pip install .` (and `make install`) install from this wheel: the page and every
    asset must be in it, not only in the source tree.  Built from a clean copy: a stale
    build/ folder in the work tree would hide a missing package-data declaration."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "exporter", src / "exporter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("crankshaft_exporter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"exporter/web/__init__.py", "exporter/web/index.html"} | {
        f"exporter/web/static/{p.name}" for p in STATIC.iterdir() if p.is_file()}
    assert wanted <= names, wanted - names


def test_page_names_the_configured_target_escaped_and_follows_a_reload(
    daemon_factory, tmp_path: Path
) -> None:
    config = tmp_path / "exporter.yaml"
    config.write_text(yaml.safe_dump({"interval": "1s",
                                      "target": {"kind": "cmdline", "value": "<b>&sleep"}}))
    d = daemon_factory("--config", str(config))
    text = d.request("/").text
    assert '<span id="target">cmdline /&lt;b&gt;&amp;sleep/</span>' in text
    assert "<b>&sleep" not in text

    config.write_text(yaml.safe_dump({"interval": "1s", "target": {"kind": "none"}}))
    os.kill(d.pid, signal.SIGHUP)
    wait_for(lambda: '<span id="target">none (values are pushed)</span>'
             in d.request("/").text, "the page to name the reloaded target")


def test_page_settings_name_the_counters_and_the_configured_thresholds(
        live: RunningDaemon, page: Markup) -> None:
    """What app.js cannot ask the JSON API: which series count up (drawn as rates) and each
    series' warning/critical thresholds (drawn as lines), as the running config says."""
    import json

    body = next(a for t, a in page.tags if t == "body")
    settings = json.loads(body["data-settings"] or "")
    doc = live.request("/metrics").json()
    names = {v["name"]: k for k, v in doc.items() if isinstance(v, dict) and "samples" in v}
    assert sorted(names[n] for n in settings["counters"]) == sorted([
        "involuntary_context_switches", "io_read_bytes", "io_written_bytes",
        "voluntary_context_switches", "websocket_total"])
    # The built-in defaults: the seed's thresholds, per series key (per-endpoint rules and
    # rules on what is no series, such as target_down, are not drawn).
    assert settings["thresholds"]["memory_usage"] == {"warning": 1536.0, "critical": 2048.0}
    assert settings["thresholds"]["request_latency"] == {"warning": 500.0, "critical": 1000.0}
    assert "target_down" not in settings["thresholds"]
