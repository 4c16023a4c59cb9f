"""The dashboard at GET / in a real headless Chromium (Debian's, driven by chromium-driver
through selenium; never a downloaded browser), against the real daemon collecting every
second.

What is checked is what a person at the head unit would see: the charts draw the daemon's
own samples (every sample of the history, none lost or doubled by the page's incremental
refresh, and the line's colour on the canvas), an alert pushed through POST /metrics/record
shows within one refresh, the page logs no console error (a Content-Security-Policy
violation would be one) and requests nothing from any other origin.  Behind a reverse
proxy's path prefix it still works, and a series the exporter adds later (the shape of the
seed's series, any name) gets its own chart without editing the page.

Served over TLS with basic auth from a web-config file, the same page works as it does on
plain HTTP (relative URLs, everything from the one origin).

Screenshots at 800x480 (a head unit) and 1366x768 (a laptop) are kept in tests/artifacts/.
Waiting is always "until the page has refreshed N times" or "until the daemon says so",
with a deadline, never a sleep.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import json
import re
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, RunningDaemon, require, require_tool, start_daemon
from tests.helpers import poll, wait_for
from tests.tlsfiles import CA, Pair, bcrypt_hash, client_context, write_web_config

pytestmark = pytest.mark.real

ARTIFACTS = REPO / "tests" / "artifacts"
# As shared/notes/real-components.md found to work headless as root on this kind of machine.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1366,768", "--hide-scrollbars",
)
SEED_SERIES = ["memory", "cpu", "websocket_active", "websocket_total", "latency"]
TIME_24H = re.compile(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?")
COUNTER_UNITS = {"io_read_bytes": {"B/s", "KiB/s", "MiB/s"},
                 "io_written_bytes": {"B/s", "KiB/s", "MiB/s"},
                 "voluntary_context_switches": {"/s"}, "involuntary_context_switches": {"/s"}}
REFRESH_DEADLINE_S = 30.0  # a few of the page's 5 s refreshes
BATCH = {
    "latency_ms": {"/api/media/play": [42.1, 95.3, 38.0], "/api/settings/get": [15.2, 17.9]},
    "extensions": {"media-player": "running", "phone": "crashed", "navigation": "starting"},
    "active_connections": 8,
    "total_connections": 152,
}

# The colour of the card's line on its canvas: pixels within a small distance of the
# stroke colour (anti-aliased edges differ, the line's core does not).
DRAWN_PIXELS_JS = """
const card = document.querySelector(`.card[data-series="${arguments[0]}"]`);
if (!card || !card.dataset.color) return -1;
const canvas = card.querySelector("canvas");
if (!canvas) return -2;
const hex = card.dataset.color;
const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 10 &&
      Math.abs(data[i + 1] - rgb[1]) < 10 && Math.abs(data[i + 2] - rgb[2]) < 10) n++;
}
return n;
"""
# Pixels of the stylesheet's colour ``arguments[1]`` (a CSS variable) on a card's canvas:
# only a threshold line is drawn in the warning/critical colours.
VAR_PIXELS_JS = """
const card = document.querySelector(`.card[data-series="${arguments[0]}"]`);
const canvas = card && card.querySelector("canvas");
if (!canvas) return -1;
const probe = document.createElement("div");
probe.style.color = `var(${arguments[1]})`;
document.body.append(probe);
const rgb = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
probe.remove();
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 12 &&
      Math.abs(data[i + 1] - rgb[1]) < 12 && Math.abs(data[i + 2] - rgb[2]) < 12) n++;
}
return n;
"""
# Every chart's axis labels as the page drew them, measured by the test in the axis font,
# against the room left of the plot (the y labels) and the card's box.
AXES_JS = """
const ctx = document.createElement("canvas").getContext("2d");
ctx.font = "11px system-ui, sans-serif";
return [...document.querySelectorAll(".card")].filter((c) => c.querySelector("canvas"))
  .map((c) => {
    const plot = c.querySelector(".plot").getBoundingClientRect();
    const card = c.getBoundingClientRect();
    const y = JSON.parse(c.dataset.yLabels || "[]");
    const x = JSON.parse(c.dataset.xLabels || "[]");
    return {key: c.dataset.series, unit: c.dataset.unit, thresholds: c.dataset.thresholds,
      y, x, plotLeft: Number(c.dataset.plotLeft),
      widest: Math.max(0, ...y.map((v) => ctx.measureText(String(v)).width)),
      xHalf: Math.max(0, ...x.map((v) => ctx.measureText(String(v)).width)) / 2,
      inside: plot.left >= card.left && plot.right <= card.right + 0.5};
  });
"""
CARDS_JS = """
return [...document.querySelectorAll(".card")].map((c) => ({
  key: c.dataset.series, title: c.querySelector("h3").textContent,
  samples: c.dataset.samples === undefined ? null : Number(c.dataset.samples),
  first: c.dataset.first ? Number(c.dataset.first) : null,
  last: c.dataset.last ? Number(c.dataset.last) : null,
  classes: c.className,
}));
"""


# --- the browser -----------------------------------------------------------------------------


class Browser:
    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.console: list[dict[str, Any]] = []
        self.requested: list[tuple[str, str]] = []  # (document URL, requested URL)

    def open(self, url: str, width: int, height: int) -> None:
        self.viewport(width, height)
        self.driver.get(url)
        self.wait_refreshes(1)

    def viewport(self, width: int, height: int) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def refreshes(self) -> int:
        return int(self.js("return Number(document.body.dataset.refreshes || 0)"))

    def wait_refreshes(self, n: int) -> int:
        return poll(self.refreshes, lambda r: r >= n, f"{n} page refreshes",
                    REFRESH_DEADLINE_S, 0.1)

    def cards(self) -> list[dict[str, Any]]:
        return self.js(CARDS_JS)

    def drawn_pixels(self, key: str) -> int:
        return int(self.js(DRAWN_PIXELS_JS, key))

    def pixels_of(self, key: str, variable: str) -> int:
        return int(self.js(VAR_PIXELS_JS, key, variable))

    def document_fits(self) -> bool:
        return bool(self.js("""const e = document.documentElement;
            return e.scrollWidth <= e.clientWidth"""))

    def collect_logs(self) -> None:
        """Browser console entries and every URL the page requested, so far."""
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                params = message["params"]
                self.requested.append((params.get("documentURL", ""), params["request"]["url"]))

    def requested_by(self, page: str) -> list[str]:
        """What documents under ``page`` requested (not Chromium's own new-tab page)."""
        return [url for doc, url in self.requested if doc.startswith(page)]

    def screenshot(self, name: str, width: int, height: int) -> Path:
        self.viewport(width, height)
        # A page refresh drawn at the new size (Chromium may otherwise still paint the old
        # layout's scrollbars), then the charts, which follow their box through a
        # ResizeObserver, fit it again.
        self.wait_refreshes(self.refreshes() + 1)
        # Then nothing sticks out sideways (no horizontal scrolling on a head unit).
        wait_for(lambda: self.js("""
            return [...document.querySelectorAll('.card .plot')].every((p) => {
              const u = p.querySelector('.u-wrap');
              return !u || Math.abs(u.getBoundingClientRect().width - p.clientWidth) < 2;
            });"""), "the charts to fit the new viewport")
        assert self.document_fits(), f"the page is wider than {width} px"
        assert_axes_readable(self)
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}-{width}x{height}.png"
        assert self.driver.save_screenshot(str(path)), path
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Pair]:
    """A CA and a server certificate for the TLS test; the browser trusts exactly that
    certificate's key (by SPKI hash), nothing else."""
    ca = CA(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("server")


def spki_sha256(pair: Pair) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(pair.cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def browser(pki: tuple[CA, Pair]) -> Iterator[Browser]:
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    require(importlib.util.find_spec("selenium") is not None,
            "selenium is not installed (pip install -e '.[test]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--ignore-certificate-errors-spki-list={spki_sha256(pki[1])}")
    profile = tempfile.TemporaryDirectory(prefix="crankshaft-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver's path is given, so selenium never looks for (or downloads) one; offline
    # mode makes sure of it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        profile.cleanup()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """The daemon on the shipped configuration (watching itself) collecting every second,
    with latency, connections and extension states pushed once; its latency rule is the
    seed's, without the shipped 5m `for`, so the alert the test pushes fires at once."""
    folder = tmp_path_factory.mktemp("browser")
    alerts = yaml.safe_load((REPO / "config" / "exporter.yaml").read_text())["alerts"]
    for rule in alerts:
        if rule["metric"] == "request_latency":
            rule.pop("for", None)
    cfg = folder / "exporter.yaml"
    cfg.write_text(yaml.safe_dump({"alerts": alerts}))
    d = start_daemon(folder, "--interval", "1", "--config", str(cfg))
    try:
        r = d.post_json("/metrics/record", BATCH)
        assert r.status == 200, r.text
        poll(lambda: d.request("/metrics").json(),
             lambda m: m["memory"]["sample_count"] >= 2 and m["latency"]["sample_count"] >= 1,
             "two ticks and the pushed batch in /metrics")
        yield d
    finally:
        d.stop()


def assert_axes_readable(browser: Browser) -> None:
    """Every chart's y labels fit left of its plot (none clipped), its plot inside its card,
    and its x axis has several 24-hour labels."""
    for axes in browser.js(AXES_JS):
        assert axes["inside"], axes
        assert axes["y"] and axes["widest"] + 4 <= axes["plotLeft"], axes
        # ticks on steps the labels can write: 0.25 and 0.75, never 0.3 and 0.8 twice over
        assert len(set(axes["y"])) == len(axes["y"]), axes
        # a time label centred on a tick at the plot's left edge still fits the canvas
        assert axes["xHalf"] <= axes["plotLeft"], axes
        assert len(axes["x"]) >= 3, axes
        assert all(TIME_24H.fullmatch(label) for label in axes["x"]), axes


def shown_and_absent(stored: dict[str, list[int]]) -> tuple[list[str], list[str]]:
    """The cards the page should show (the seed's series, and any other with samples) and
    the series it names in one line instead (a sensor this machine lacks)."""
    shown = [k for k in stored if stored[k] or k in SEED_SERIES]
    return shown, [k for k in stored if k not in shown]


def daemon_samples(d: RunningDaemon) -> dict[str, list[int]]:
    doc = d.request("/metrics").json()
    assert isinstance(doc, dict)
    return {k: [s["timestamp"] for s in v["samples"]]
            for k, v in doc.items() if isinstance(v, dict) and "samples" in v}


def assert_clean(browser: Browser, origin: str) -> None:
    browser.collect_logs()
    # The test's own pixel reads make Chromium suggest willReadFrequently: not the page's.
    errors = [e for e in browser.console if e["level"] in ("SEVERE", "WARNING")
              and "Multiple readback operations using getImageData" not in e["message"]]
    assert errors == [], errors
    requested = browser.requested_by(origin)
    assert requested, "the performance log recorded no request of the page"
    foreign = [u for u in requested if not u.startswith(origin)]
    assert foreign == [], foreign


# --- tests -------------------------------------------------------------------------------


def test_dashboard_draws_the_daemons_history_and_shows_a_new_alert_within_one_refresh(
    browser: Browser, live: RunningDaemon
) -> None:
    browser.open(live.url + "/", 800, 480)
    # Three refreshes: the first fetches the whole range, the next ones only what is new.
    browser.wait_refreshes(3)

    cards = browser.cards()
    stored = daemon_samples(live)
    # One card per series of the document, in its order: the seed's first, then what the
    # default sources add (process detail here; board health where the board has sensors).
    # A series with no sample at all (no sensor here) has no card: one line names it.
    shown, absent = shown_and_absent(stored)
    assert [c["key"] for c in cards] == shown
    note = browser.js("const n = document.getElementById('absent');"
                      "return [n.hidden, n.dataset.series || '', n.textContent]")
    assert note[0] == (not absent) and note[1].split() == absent, note
    assert all(c["samples"] for c in cards if c["key"] not in SEED_SERIES), cards
    assert [c["key"] for c in cards][: len(SEED_SERIES)] == SEED_SERIES
    assert [c["title"] for c in cards][: len(SEED_SERIES)] == [
        "Memory (RSS)", "CPU", "Active connections", "Total connections", "Request latency"]
    for card in cards:
        key = card["key"]
        if not stored[key]:
            assert card["samples"] == 0, card
            continue
        # The page holds exactly the daemon's samples from its oldest up to the newest it
        # has fetched: none lost or doubled by the incremental merges.
        assert card["first"] == stored[key][0], card
        shown = [t for t in stored[key] if card["first"] <= t <= card["last"]]
        assert card["samples"] == len(shown), (card, len(shown))
    assert next(c for c in cards if c["key"] == "memory")["samples"] >= 3
    # Drawn: a line across the chart for memory, at least a point for any series that has
    # a sample (a single pushed connection count is a dot).
    assert browser.drawn_pixels("memory") > 50
    for card in cards:
        if card["samples"]:
            assert browser.drawn_pixels(card["key"]) > 0, card

    # The latency table and extension states, from the pushed batch.
    rows = browser.js("""return [...document.querySelectorAll('#latency tbody tr')]
        .map((tr) => [...tr.cells].map((td) => td.textContent));""")
    assert sorted(r[0] for r in rows) == ["/api/media/play", "/api/settings/get"]
    assert {r[0]: r[4] for r in rows} == {"/api/media/play": "3", "/api/settings/get": "2"}
    states = browser.js("""return Object.fromEntries(
        [...document.querySelectorAll('#extensions tbody tr')]
        .map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]));""")
    assert states == BATCH["extensions"]
    target = browser.js("return document.getElementById('target-state').textContent")
    assert target == "up"
    assert browser.js("return document.getElementById('target-banner').hidden")
    # Units a person reads: memory in MiB (the JSON's "MB"), counters as rates per second.
    latest = browser.js("""return Object.fromEntries([...document.querySelectorAll('.card')]
        .map((c) => [c.dataset.series, [c.dataset.unit, c.querySelector('.latest').textContent,
                                        c.querySelector('.stats').textContent]]))""")
    assert latest["memory"][0] == "MiB" and latest["memory"][1].endswith(" MiB"), latest
    assert "MB" not in latest["memory"][2]
    for key, units in COUNTER_UNITS.items():
        if key in latest:
            assert latest[key][0] in units, (key, latest[key])
    header_time = browser.js("return document.getElementById('updated').textContent")
    assert TIME_24H.fullmatch(header_time), header_time

    # An alert pushed through the ingest route: latency above the seed's critical 1000 ms.
    # It stays active while no new observation arrives, so the page cannot miss it.
    r = live.post_json("/metrics/record", {"latency_ms": {"/api/media/play": 1500.0}})
    assert r.status == 200, r.text
    poll(lambda: live.request("/metrics/alerts").json(),
         lambda alerts: any(a["metric"] == "request_latency" and a["level"] == "CRITICAL"
                            for a in alerts),
         "the daemon to raise the latency alert")
    # The refresh under way may have read the alerts just before; the next one cannot have.
    browser.wait_refreshes(browser.refreshes() + 2)
    shown = browser.js("""return [...document.querySelectorAll('#alerts .alert')].map((a) => (
        {metric: a.dataset.metric, level: a.dataset.level, text: a.textContent}));""")
    latency_alerts = [a for a in shown if a["metric"] == "request_latency"]
    assert latency_alerts and latency_alerts[0]["level"] == "CRITICAL", shown
    assert "1,500 ms" in latency_alerts[0]["text"] or "1500 ms" in latency_alerts[0]["text"]
    assert shown[0]["level"] == "CRITICAL"  # critical alerts come first
    latency_card = next(c for c in browser.cards() if c["key"] == "latency")
    assert "critical" in latency_card["classes"].split()
    # The latency rule's lines: 1,500 ms brings the critical 1,000 into the chart's range.
    axes = {a["key"]: a for a in browser.js(AXES_JS)}
    assert "critical:1000" in axes["latency"]["thresholds"].split(), axes["latency"]
    assert browser.pixels_of("latency", "--crit") > 50
    assert "ms" in next(a for a in shown if a["metric"] == "request_latency")["text"]
    assert browser.js("return document.title").startswith("(")

    browser.screenshot("dashboard", 800, 480)
    browser.screenshot("dashboard", 1280, 900)
    browser.screenshot("dashboard", 1366, 768)
    browser.screenshot("dashboard-phone", 390, 844)
    # A head unit at night: the dark scheme, charts redrawn in its colours.
    colour_js = """return [document.querySelector('.card[data-series="memory"]').dataset.color,
        getComputedStyle(document.documentElement).getPropertyValue('--chart-1').trim()]"""
    light, _ = browser.js(colour_js)
    browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    wait_for(lambda: (lambda drawn, scheme: drawn == scheme != light)(*browser.js(colour_js)),
             "the charts redrawn in the dark scheme's colours")
    assert browser.drawn_pixels("memory") > 50
    browser.screenshot("dashboard-dark", 800, 480)
    assert_clean(browser, live.url + "/")


# --- behind a reverse proxy, with a series the page has never heard of ----------------------

EXTRA_KEY = "board_cpu_temperature"


def with_extra_series(body: bytes) -> bytes:
    """The daemon's /metrics document plus one more series in the seed's shape (as the
    board-health source will add), one sample per memory sample."""
    doc = json.loads(body)
    values = [{"timestamp": s["timestamp"], "value": 48.0 + (s["timestamp"] // 1000) % 7}
              for s in doc["memory"]["samples"]]
    numbers = [s["value"] for s in values]
    doc[EXTRA_KEY] = {
        "name": "cpu_temperature", "unit": "°C", "sample_count": len(values),
        "latest": numbers[-1] if numbers else None,
        "average": sum(numbers) / len(numbers) if numbers else None,
        "min": min(numbers, default=None), "max": max(numbers, default=None),
        "samples": values,
    }
    return json.dumps(doc).encode()


class PrefixProxy(ThreadingHTTPServer):
    """Serves the daemon under /car/ (as nginx's ``location /car/ { proxy_pass ...; }``
    would), adding EXTRA_KEY to the /metrics document on the way."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), ProxyHandler)


class ProxyHandler(BaseHTTPRequestHandler):
    server: PrefixProxy

    def do_GET(self) -> None:
        if not self.path.startswith("/car/"):
            self._answer(404, {"Content-Type": "text/plain"}, b"not under /car/")
            return
        path = self.path[len("/car"):]
        request = urllib.request.Request(self.server.upstream + path,
                                         headers={"Accept": self.headers.get("Accept", "*/*")})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, headers, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        if path.split("?")[0] == "/metrics" and status == 200:
            body = with_extra_series(body)
        keep = ("Content-Type", "Cache-Control", "Content-Security-Policy",
                "X-Content-Type-Options")
        self._answer(status, {k: headers[k] for k in keep if headers.get(k)}, body)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(live: RunningDaemon) -> Iterator[str]:
    server = PrefixProxy(live.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_dashboard_behind_a_path_prefix_draws_a_series_it_was_never_told_about(
    browser: Browser, live: RunningDaemon, proxy: str
) -> None:
    browser.collect_logs()  # what the other test left
    browser.console.clear()
    browser.requested.clear()
    base = proxy + "/car/"
    browser.open(base, 1366, 768)
    browser.wait_refreshes(2)

    cards = browser.cards()
    assert [c["key"] for c in cards] == [*shown_and_absent(daemon_samples(live))[0], EXTRA_KEY]
    extra = cards[-1]
    assert extra["title"] == "CPU temperature"
    memory = cards[0]
    assert extra["samples"] == memory["samples"] and extra["samples"] >= 2
    assert extra["first"] == memory["first"] and extra["last"] == memory["last"]
    assert browser.drawn_pixels(EXTRA_KEY) > 20
    latest = browser.js(f"""return document.querySelector(
        '.card[data-series="{EXTRA_KEY}"] .latest').textContent""")
    assert latest.endswith("°C")

    # Another range: the button, the URL's hash, one fetch of that range's history
    # (6 h at 1 s = 21,600 intervals, plus the sample at the start).
    before = browser.refreshes()
    browser.driver.find_element("css selector", '.ranges button[data-range="6h"]').click()
    browser.wait_refreshes(before + 2)
    assert browser.js("return location.hash") == "#6h"
    pressed = browser.js("""return [...document.querySelectorAll('.ranges button')]
        .filter((b) => b.getAttribute('aria-pressed') === 'true').map((b) => b.dataset.range)""")
    assert pressed == ["6h"]
    browser.collect_logs()
    assert base + "metrics?last_n=21601" in browser.requested_by(base)
    cards = {c["key"]: c for c in browser.cards()}
    assert cards[EXTRA_KEY]["samples"] == cards["memory"]["samples"] > extra["samples"]
    assert cards["memory"]["first"] == memory["first"]

    links = browser.js("return [...document.querySelectorAll('a')].map((a) => a.href)")
    assert links and all(link.startswith(base) for link in links), links
    assert base + "metrics/summary" in links
    browser.screenshot("dashboard-prefixed", 1366, 768)
    assert_clean(browser, base)
    # Everything went through the prefix, nothing straight to the daemon's root.
    requested = browser.requested_by(base)
    assert any(u.startswith(base + "metrics?last_n=") for u in requested)
    assert any(u.startswith(base + "static/uPlot.iife.min.js?v=") for u in requested)


# --- over TLS with basic auth ------------------------------------------------------------------


def healthz_over_tls(port: int, ca: CA, credentials: str) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(ca),
                                       timeout=10)
    try:
        conn.request("GET", "/healthz", headers={"Authorization": f"Basic {credentials}"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_dashboard_over_tls_with_basic_auth(browser: Browser, pki: tuple[CA, Pair],
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """The web-config file's TLS and basic auth in front of the page. The browser sends the
    credentials with every request, as it does once its login prompt has been answered
    (headless Chromium has no prompt, so they are set through the DevTools protocol)."""
    ca, server_cert = pki
    tmp = tmp_path_factory.mktemp("tls-dashboard")
    web = write_web_config(tmp / "web.yml", {
        "tls_server_config": {"cert_file": str(server_cert.cert),
                              "key_file": str(server_cert.key)},
        "basic_auth_users": {"prom": bcrypt_hash("s3cret")},
    })
    d = start_daemon(tmp, "--interval", "1", "--web.config.file", str(web))
    credentials = base64.b64encode(b"prom:s3cret").decode()
    driver = browser.driver
    try:
        # The page links /healthz, which answers 503 until the first collection.
        wait_for(lambda: healthz_over_tls(d.port, ca, credentials) == 200,
                 "the first collection")
        browser.collect_logs()  # what the other tests left
        browser.console.clear()
        browser.requested.clear()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                               {"headers": {"Authorization": f"Basic {credentials}"}})
        origin = f"https://127.0.0.1:{d.port}/"
        browser.open(origin, 1366, 768)
        browser.wait_refreshes(3)
        assert browser.js("return location.protocol") == "https:"
        cards = browser.cards()
        assert [c["key"] for c in cards][: len(SEED_SERIES)] == SEED_SERIES
        memory = cards[0]
        assert memory["samples"] >= 2, memory
        assert browser.drawn_pixels("memory") > 0
        assert browser.js("return document.getElementById('target-state').textContent") == "up"
        browser.screenshot("dashboard-tls", 800, 480)
        assert_clean(browser, origin)
        requested = browser.requested_by(origin)
        assert any(u.startswith(origin + "metrics?last_n=") for u in requested), requested
        assert any(u.startswith(origin + "static/app.js?v=") for u in requested), requested
    finally:
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
        d.stop()


# --- a target that is not found ----------------------------------------------------------------


def test_a_missing_target_says_why_in_a_banner(browser: Browser, tmp_path: Path) -> None:
    """A typo'd --target: the page's banner says what was looked for and the nearest name,
    as /healthz does, and the page still fits a phone."""
    exe = tmp_path / "csheadunitd"
    exe.write_bytes(Path("/bin/sleep").read_bytes())
    exe.chmod(0o755)
    target = subprocess.Popen([str(exe), "600"])
    d = start_daemon(tmp_path, "--interval", "1", "--target", "name:csheadunit")
    try:
        poll(lambda: d.request("/healthz").json(), lambda h: h["status"] == "degraded",
             "the daemon to miss its target")
        browser.open(d.url + "/", 390, 844)
        banner = browser.js("const b = document.getElementById('target-banner');"
                            "return [b.hidden, b.textContent]")
        assert banner[0] is False, banner
        assert "target name csheadunit not found" in banner[1]
        assert "nearest names: csheadunitd" in banner[1]
        assert browser.js("return document.getElementById('target-state').textContent") == "down"
        browser.screenshot("dashboard-target-down", 390, 844)
        browser.screenshot("dashboard-target-down", 800, 480)
    finally:
        d.stop()
        target.kill()
        target.wait()
