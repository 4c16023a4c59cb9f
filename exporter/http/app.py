"""The routes of port 9001, independent of the socket server so they can be tested alone.

Every failure a client can cause is an :class:`HttpError` rendered as ``{"error": "..."}``
with its status; anything else that escapes a handler is a bug, logged and answered 500
without details.
"""

from __future__ import annotations

import functools
import gzip
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from exporter import __version__
from exporter.config.model import HttpConfig
from exporter.endpoint import MetricsEndpoint
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.history.backfill import check_extra_labels, iter_history
from exporter.http.coalesce import Coalescer
from exporter.http.fresh_renders import FreshRenders
from exporter.http.negotiation import JSON, OPENMETRICS, TEXT, accepts_gzip, choose
from exporter.http.openapi import render_openapi
from exporter.ingest import Batch, BatchError, decode_json, gauge_fields, parse_batch
from exporter.rendering import WouldWait
from exporter.series import COUNTER
from exporter.sources import registry
from exporter.web import CONTENT_SECURITY_POLICY, HTML_CONTENT_TYPE, REVALIDATE, Dashboard

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8; header=present"
GZIP_MIN_BYTES = 1024
MAX_LAST_N_DIGITS = 12

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_HTTP = HttpConfig()  # the one definition of the defaults: the config model's


TOKEN_HEADER = "x-ingest-token"  # the token's other header, for when basic auth holds
# "Authorization"


@dataclass(frozen=True)
class HttpSettings:
    """The ``http:`` section as the app uses it (defaults: the config model's).
    ``ingest_allow_listed`` says whether the user listed ``ingest_allow`` (then only those
    networks write without the token); if not, ``ingest_allow`` is loopback, and it writes
    only while no token is configured."""

    max_body_bytes: int = DEFAULT_HTTP.max_body_bytes
    request_timeout_s: float = DEFAULT_HTTP.request_timeout
    idle_timeout_s: float = DEFAULT_HTTP.idle_timeout
    max_connections: int = DEFAULT_HTTP.max_connections
    ingest_allow: tuple[Network, ...] = DEFAULT_HTTP.ingest_allow
    ingest_allow_listed: bool = False
    ingest_token: str | None = None
    target: str = "self"  # how the dashboard names the watched target


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    client_ip: str
    body: bytes = b""
    # When the whole request had arrived (time.monotonic()); a render begun after it may
    # answer it (fresh_renders.py).  Unknown: infinity, always a render of its own.
    received: float = math.inf


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    # A body too big to hold at once (a week of history): sent chunked as it is made.
    stream: Iterator[bytes] | None = None
    # Called once when the stream is closed, sent or not (gives back its slot).
    on_close: Callable[[], None] | None = None


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


MAX_STREAMS = 2  # history downloads at once


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode())


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps({"error": message}).encode(), headers=headers or {})


def _gzip_stream(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """A gzip member made piece by piece (level 5, as the other responses)."""
    compressor = zlib.compressobj(5, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
    for piece in pieces:
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


def _last_n(query: dict[str, list[str]]) -> int:
    """The seed's ``last_n``: a count of newest samples; absent or -1 means all of them."""
    values = query.get("last_n")
    if not values:
        return -1
    if len(values) > 1:
        raise HttpError(400, "last_n: give it once")
    text = values[0].strip()
    if text == "-1":
        return -1
    if not text.isdigit() or not text.isascii() or len(text) > MAX_LAST_N_DIGITS:
        raise HttpError(
            400, f"last_n: must be a whole number >= 0 (or -1 for all), got {text[:20]!r}"
        )
    return int(text)


class App:
    def __init__(
        self,
        endpoint: MetricsEndpoint,
        settings: HttpSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings or HttpSettings()
        self._monotonic = monotonic
        self._openapi: tuple[object, bytes] | None = None  # (catalog, text)
        self._dashboard = Dashboard()
        # Each history download holds a copy of what it sends (~14 MB for a week): a few at
        # once, so that a crowd of them cannot take the daemon past its memory limit.
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        # Concurrent scrapes share one render per format (see coalesce.py).
        self._render = {
            om: Coalescer(functools.partial(endpoint.render_exposition, om)) for om in (False, True)
        }
        self._documents = FreshRenders()  # the large JSON and CSV documents
        self.routes: dict[str, dict[str, Callable[[Request], Response]]] = {
            "/metrics": {"GET": self.metrics},
            "/metrics/summary": {"GET": self.summary},
            "/metrics/alerts": {"GET": self.alerts},
            "/metrics/prometheus": {"GET": self.prometheus},
            "/metrics/csv": {"GET": self.csv},
            "/metrics/history": {"GET": self.history},
            "/metrics/record": {"POST": self.record},
            "/healthz": {"GET": self.healthz},
            "/openapi.yaml": {"GET": self.openapi},
            "/": {"GET": self.page},
        }
        for path in self._dashboard.assets:
            self.routes[path] = {"GET": self.static}

    # --- dispatch --------------------------------------------------------------------------

    def allowed_methods(self, path: str) -> list[str] | None:
        methods = self.routes.get(path)
        if methods is None:
            return None
        allowed = list(methods)
        if "GET" in methods:
            allowed.append("HEAD")
        return allowed

    def handle(self, request: Request) -> Response:
        try:
            response = self._route(request)
        except HttpError as e:
            response = error_response(e.status, e.message, e.headers)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error_response(500, "internal error; see the exporter's log")
        return self._maybe_gzip(request, response)

    def _route(self, request: Request) -> Response:
        methods = self.routes.get(request.path)
        if methods is None:
            raise HttpError(404, f"no such route: {request.path[:200]}")
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(self.allowed_methods(request.path) or [])
            raise HttpError(
                405, f"{request.method[:20]} is not allowed here; use {allowed}", {"Allow": allowed}
            )
        return handler(request)

    def answer_now(self, request: Request) -> Response | None:
        """A scrape of the exposition answered here and now, on the event loop, if that
        needs no waiting (no lock held by a collection or an ingest batch, no render in
        progress, no status provider that may wait on I/O); None sends the request to a
        handler thread.  At one scrape a second the hop to a thread and back, each side
        waking on cold caches, was a tenth of a scrape's CPU (tests/bench/bench_scrape_cpu.py)."""
        if request.query or not self.is_scrape(request):
            return None
        openmetrics = self._exposition_format(request)
        assert openmetrics is not None
        try:
            body = self._render[openmetrics].now(
                functools.partial(self.endpoint.render_exposition, openmetrics, False),
                WouldWait)
        except Exception:
            return None  # a thread renders it again, and logs what went wrong
        if body is None:
            return None
        return self._maybe_gzip(request, self._exposition_response(body, openmetrics))

    def is_scrape(self, request: Request) -> bool:
        """A scrape of the exposition: a Prometheus waits for it with a timeout, so it goes
        ahead of other work waiting for a handler thread."""
        return (request.method in ("GET", "HEAD")
                and request.path in ("/metrics", "/metrics/prometheus")
                and self._exposition_format(request) is not None)

    def _maybe_gzip(self, request: Request, response: Response) -> Response:
        response.headers.setdefault("Vary", "Accept-Encoding")
        if response.stream is not None:
            if accepts_gzip(request.headers.get("accept-encoding")):
                response.stream = _gzip_stream(response.stream)
                response.headers["Content-Encoding"] = "gzip"
            return response
        if len(response.body) >= GZIP_MIN_BYTES and accepts_gzip(
            request.headers.get("accept-encoding")
        ):
            response.body = gzip.compress(response.body, compresslevel=5)
            response.headers["Content-Encoding"] = "gzip"
        return response

    # --- routes ----------------------------------------------------------------------------

    def metrics(self, request: Request) -> Response:
        """JSON for people and dashboards; exposition for a Prometheus on the default path."""
        query = parse_qs(request.query)
        openmetrics = self._exposition_format(request)
        if openmetrics is not None:
            return self._exposition(openmetrics)
        last_n = _last_n(query)
        response = Response(200, self._documents.get(
            ("json", last_n), request.received,
            functools.partial(self.endpoint.render_metrics_json, last_n)))
        response.headers["Vary"] = "Accept, Accept-Encoding"
        return response

    def prometheus(self, request: Request) -> Response:
        return self._exposition(self._exposition_format(request) is True)

    @staticmethod
    def _exposition_format(request: Request) -> bool | None:
        """OpenMetrics (True) or text (False) as the client prefers; None where
        ``GET /metrics`` is asked for its JSON document."""
        accept = request.headers.get("accept")
        if request.path == "/metrics/prometheus":
            return choose(accept, [TEXT, OPENMETRICS]) == OPENMETRICS
        chosen = choose(accept, [JSON, OPENMETRICS, TEXT])
        return None if chosen == JSON else chosen == OPENMETRICS

    def _exposition(self, openmetrics: bool) -> Response:
        return self._exposition_response(self._render[openmetrics](), openmetrics)

    @staticmethod
    def _exposition_response(body: bytes, openmetrics: bool) -> Response:
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        return Response(200, body, content_type, {"Vary": "Accept, Accept-Encoding"})

    def summary(self, request: Request) -> Response:
        return json_response(self.endpoint.get_metrics_summary())

    def alerts(self, request: Request) -> Response:
        return json_response(self.endpoint.get_alerts())

    def csv(self, request: Request) -> Response:
        last_n = _last_n(parse_qs(request.query))
        body = self._documents.get(("csv", last_n), request.received,
                                   lambda: self.endpoint.export_csv(last_n).encode())
        return Response(200, body, CSV_CONTENT_TYPE)

    def history(self, request: Request) -> Response:
        """Every stored sample with its timestamp, for promtool's backfill; ``label=NAME=VALUE``
        (repeatable) adds a label to every series, e.g. the job and instance Prometheus
        gives the scraped ones."""
        query = parse_qs(request.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"label"})
        if unknown:
            raise HttpError(400, f"unknown parameter {unknown[0][:40]!r}; only label=NAME=VALUE")
        try:
            labels = check_extra_labels(query.get("label", []), self.endpoint.store.catalog)
        except ValueError as e:
            raise HttpError(400, str(e)) from None
        if request.method == "HEAD":  # the headers only: no copy of the history
            return Response(200, b"", OPENMETRICS_CONTENT_TYPE, stream=iter(()))
        if not self._streams.acquire(blocking=False):
            raise HttpError(503, f"{MAX_STREAMS} history downloads are running; try again "
                            "when one has finished", {"Retry-After": "10"})
        try:
            pieces = iter_history(self.endpoint.recorder, labels)
        except BaseException:
            self._streams.release()
            raise
        return Response(200, b"", OPENMETRICS_CONTENT_TYPE, stream=pieces,
                        on_close=self._streams.release)

    def healthz(self, request: Request) -> Response:
        """Healthy while the collector keeps its schedule (a stuck loop turns this 503).
        A target that is not found is "degraded" with the reason, still 200: restarting
        the exporter (what a liveness probe does on failure) would not bring it back."""
        ep = self.endpoint
        age = ep.seconds_since_last_collection()
        limit = 2 * ep.collection_interval_ms / 1000.0 + 5.0
        healthy = ep.is_collecting() and age is not None and age <= limit
        miss = ep.target_miss()
        reasons = [] if miss is None else [miss.text()]
        if not healthy:
            reasons.insert(0, "not collecting" if not ep.is_collecting() else
                           "the last collection is overdue" if age is not None else
                           "no collection has finished yet")
        doc = {
            "status": "unhealthy" if not healthy else "degraded" if reasons else "ok",
            "is_collecting": ep.is_collecting(),
            "seconds_since_last_collection": age,
            "collection_interval_ms": ep.collection_interval_ms,
            "target": self.settings.target,
            "target_up": ep.target_up(),
            "target_missing": None if miss is None else miss.as_json(),
            "reasons": reasons,
        }
        return json_response(doc, 200 if healthy else 503)

    def openapi(self, request: Request) -> Response:
        catalog = self.endpoint.store.catalog
        if self._openapi is None or self._openapi[0] is not catalog:  # sources changed
            self._openapi = (catalog, render_openapi(catalog, registry.all_series()))
        return Response(200, self._openapi[1], "application/yaml")

    def page(self, request: Request) -> Response:
        """The dashboard (exporter/web): HTML whatever the Accept header, like node_exporter's
        landing page; the JSON routes are unchanged."""
        links = [
            path.lstrip("/")
            for path, methods in self.routes.items()
            if "GET" in methods and path != "/" and path not in self._dashboard.assets
        ]
        body = self._dashboard.page(__version__, self.settings.target, links,
                                    self._page_settings())
        return Response(200, body, HTML_CONTENT_TYPE, {
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": REVALIDATE,
            "X-Content-Type-Options": "nosniff",
        })

    def _page_settings(self) -> dict[str, object]:
        """What the page cannot ask the JSON API: which series count up (drawn as rates per
        second) and each series' warning/critical thresholds (drawn as lines)."""
        keys = {spec.key for spec in self.endpoint.store.catalog}
        counters = sorted(s.key for s in registry.all_series()
                          if s.kind == COUNTER and s.key in keys)
        thresholds = {
            rule.metric: {"warning": rule.warning_threshold, "critical": rule.critical_threshold}
            for rule in self.endpoint.alert_rules()
            if rule.enabled and rule.selector is None and rule.metric in keys
        }
        return {"counters": counters, "thresholds": thresholds}

    def static(self, request: Request) -> Response:
        asset = self._dashboard.assets[request.path]
        versions = parse_qs(request.query).get("v")
        return Response(200, asset.body, asset.content_type, {
            "Cache-Control": asset.cache_control(versions[0] if versions else None),
            "X-Content-Type-Options": "nosniff",
        })

    def record(self, request: Request) -> Response:
        self._authorize_write(request)
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise HttpError(415, "send the batch as Content-Type: application/json")
        try:
            batch = parse_batch(decode_json(request.body))
        except BatchError as e:
            raise HttpError(400, str(e)) from None
        self._refuse_measured(batch)
        outcome = self.endpoint.record_batch(batch)
        return json_response(
            {
                "accepted": {
                    "gauges": outcome.gauges,
                    "extensions": outcome.extensions,
                    "latency_observations": outcome.observations,
                },
                "dropped": {
                    "extensions": outcome.extensions_dropped,
                    "latency_observations": outcome.observations_dropped,
                },
                "dropped_latency_observations": outcome.observations_dropped,  # earlier name
            }
        )

    def _refuse_measured(self, batch: Batch) -> None:
        """A pushed value would replace a running source's measurement for that tick (a
        client's 245.8 MiB over the target's real 40 MiB, setting the chart's scale and the
        history's max): such a batch is refused whole, 409, naming the source, and nothing
        of it is recorded.  The Python API's record_* calls keep the seed's override."""
        measured = self.endpoint.measured_by()
        clashes = [(name, measured[key]) for name, key in _push_fields().items()
                   if key in batch.gauges and key in measured]
        if not clashes:
            return
        said = "; ".join(f"{name} is measured by the running source {source!r}"
                         for name, source in clashes)
        free = [name for name, key in _push_fields().items() if key not in measured]
        hint = (f"push only what no source measures ({', '.join(free)}, extensions, "
                "latency_ms)" if free else "push only extensions and latency_ms")
        raise HttpError(409, f"{said} (target {self.settings.target}); nothing was recorded: "
                        f"{hint}, or run with target: none to push these yourself")

    def _authorize_write(self, request: Request) -> None:
        """Who may write, in this order: a valid token from anywhere; then, with a token
        configured, only networks the user listed in ``ingest_allow``; with no token, the
        listed networks or, if none were listed, loopback."""
        token = self.settings.ingest_token
        allow = self.settings.ingest_allow
        ip = _client_ip(request.client_ip)
        if token is None:
            if ip is not None and any(ip in net for net in allow):
                return
            raise HttpError(403, f"writing is not allowed from {ip or 'this client'}")
        given = _presented_token(request)
        challenge = 'Bearer realm="crankshaft-exporter"'
        if given is not None:
            if hmac.compare_digest(given.encode(), token.encode()):
                return
            raise HttpError(401, "the bearer token is not valid for writing",
                            {"WWW-Authenticate": challenge + ', error="invalid_token"'})
        if self.settings.ingest_allow_listed and ip is not None and any(ip in net for net in allow):
            return
        raise HttpError(401, "writing needs the ingest token (Authorization: Bearer TOKEN)",
                        {"WWW-Authenticate": challenge})


def _push_fields() -> dict[str, str]:
    """Ingest field -> series key, e.g. memory_mb -> memory_usage."""
    return {name: key for name, (key, _) in gauge_fields().items()}


def _presented_token(request: Request) -> str | None:
    """The token a client sent: ``Authorization: Bearer T`` or ``X-Ingest-Token: T``."""
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return given.strip()
    other = request.headers.get(TOKEN_HEADER)
    return other.strip() if other is not None else None


def _client_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
