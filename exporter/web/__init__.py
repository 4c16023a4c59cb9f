"""The built-in dashboard served at ``GET /``: one HTML page and its static assets.

Why it exists: a head unit in a car usually has no Grafana nearby and no internet, so the
exporter shows itself.  Everything the page loads comes from files in this package
(``index.html`` and ``static/``); nothing is fetched from another host, so the page can
send ``Content-Security-Policy: default-src 'self'`` and works offline.  Every URL in the
page is relative (``static/app.js``, ``metrics/alerts``), so it keeps working behind TLS,
basic auth or a reverse proxy that serves the exporter under a path prefix.

The page is a template only for what the server knows and the browser cannot ask for: the
version, the target's description, the list of routes, and (as JSON in the body's
``data-settings``) which series are counters, shown as rates, and the alert thresholds
drawn on the charts.  Live data is fetched by
``static/app.js`` from the JSON API (``healthz``, ``metrics/summary``, ``metrics/alerts``,
``metrics?last_n=N``).

Caching: asset URLs in the page carry ``?v=<hash of the file>``; a request with the current
hash may be cached for a year (``immutable``), anything else is ``no-cache``.  An upgrade
changes the hashes, so a browser never mixes old and new files.

Vendored: uPlot 1.6.32 (MIT, by Leon Sorokin), the chart library, taken from the npm
registry package ``uplot@1.6.32`` (tarball sha512
``KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==``):
``dist/uPlot.iife.min.js`` and ``dist/uPlot.min.css`` unchanged, its ``LICENSE`` as
``static/uPlot.LICENSE.txt``; its unminified source ``dist/uPlot.iife.js`` (the same build
before minifying) as ``source/uPlot.iife.js``, installed beside it but never served.
Chosen because it draws thousands of points on a canvas quickly, has no dependencies, and
weighs ~22 KB gzipped.  To update: ``npm pack uplot@X``, copy the same four files, change
the version here and in ``index.html``'s credits.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from importlib import resources
from string import Template

HTML_CONTENT_TYPE = "text/html; charset=utf-8"
CONTENT_SECURITY_POLICY = "default-src 'self'"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# By file suffix; anything else in static/ is refused at start-up rather than served with
# a guessed type (browsers refuse scripts and styles served as the wrong type under nosniff).
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

_ASSET_REF = re.compile(r'(?P<attr>(?:src|href)=")static/(?P<name>[^"?#]+)"')


@dataclass(frozen=True)
class Asset:
    """One file of ``static/``: served at ``/static/<name>``."""

    name: str
    body: bytes
    content_type: str
    version: str  # short hash of the body, the ``v`` of versioned URLs

    @property
    def path(self) -> str:
        return f"/static/{self.name}"

    def cache_control(self, requested_version: str | None) -> str:
        """Cacheable for good only when asked for under its current hash."""
        return IMMUTABLE if requested_version == self.version else REVALIDATE


def _version(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/``, by URL path."""
    assets: dict[str, Asset] = {}
    for entry in sorted(resources.files(__name__).joinpath("static").iterdir(),
                        key=lambda e: e.name):
        if not entry.is_file():
            continue
        suffix = entry.name[entry.name.rfind("."):]
        if suffix not in CONTENT_TYPES:
            raise RuntimeError(f"exporter/web/static/{entry.name}: no content type for {suffix}")
        body = entry.read_bytes()
        asset = Asset(entry.name, body, CONTENT_TYPES[suffix], _version(body))
        assets[asset.path] = asset
    return assets


class Dashboard:
    """The page template and the assets, read once from the package."""

    def __init__(self) -> None:
        self.assets = load_assets()
        template = resources.files(__name__).joinpath("index.html").read_text("utf-8")
        self._template = Template(_ASSET_REF.sub(self._versioned, template))
        self._cache: tuple[tuple[str, str, tuple[str, ...], str], bytes] | None = None

    def _versioned(self, match: re.Match[str]) -> str:
        name = match["name"]
        asset = self.assets.get(f"/static/{name}")
        if asset is None:
            raise RuntimeError(f"exporter/web/index.html refers to a missing static/{name}")
        return f'{match["attr"]}static/{name}?v={asset.version}"'

    def page(self, version: str, target: str, links: list[str],
             settings: dict[str, object] | None = None) -> bytes:
        """The HTML page; ``links`` are route paths relative to the page (``metrics/csv``);
        ``settings`` is what app.js reads at start (counters, thresholds)."""
        data = json.dumps(settings or {}, sort_keys=True)
        key = (version, target, tuple(links), data)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        items = "\n".join(
            f'      <li><a href="{html.escape(link)}">{html.escape(link)}</a></li>'
            for link in links
        )
        body = self._template.substitute(
            version=html.escape(version), target=html.escape(target), links=items,
            settings=html.escape(data),
        ).encode()
        self._cache = (key, body)
        return body
