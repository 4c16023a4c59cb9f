"""The web configuration file of prometheus/exporter-toolkit (``--web.config.file``).

node_exporter, Prometheus and every official exporter read TLS and basic-auth settings from
this one format, so a user can point this exporter at the file they already have.  The rules
follow exporter-toolkit's ``web/tls_config.go`` and ``web/handler.go``: unknown and duplicate
keys are errors (its YAML decoder is strict), TLS is on as soon as any certificate, key,
client CA or client-auth setting is present, relative paths are relative to the file's
folder, headers are limited to the five it allows, and passwords are bcrypt hashes.

Where Python's ``ssl`` cannot do what a setting asks (a client certificate required but not
verified, several curves in preference order) the problem names the key instead of quietly
serving something weaker.  Every problem is one ``FILE:LINE: key.path: message`` line, like
the rest of the configuration.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from exporter.config.durations import parse_duration
from exporter.config.errors import ConfigError, one_line, quote
from exporter.config.yamltree import Fields, Walker, compose, is_null, read_text

MAX_FILE_BYTES = 1 << 20

TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = (
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
    "cipher_suites", "curve_preferences", "min_version", "max_version",
    "prefer_server_cipher_suites", "client_allowed_sans",
)  # fmt: skip
HTTP_KEYS = ("http2", "headers")
RATE_LIMIT_KEYS = ("interval", "burst")

# exporter-toolkit's extraHTTPHeaders: the names a file may set, and the values allowed
# where the header is an enumeration (None: any value).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() (the secure list Go accepts by name) with OpenSSL's names.  TLS 1.3
# suites are accepted and, as in Go, do not restrict TLS 1.3 (it is not configurable).
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}

CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}  # fmt: skip

# client_auth_type -> Python's verify mode, or None where Python's ssl cannot do it.
CLIENT_AUTH: dict[str, ssl.VerifyMode | None] = {
    "NoClientCert": ssl.CERT_NONE,
    # Go asks for a certificate and accepts any or none; nothing here reads it, so access is
    # exactly that of NoClientCert.
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": None,
    "RequireClientCert": None,  # exporter-toolkit's old name for RequireAnyClientCert
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

# Go's bcrypt.Cost(): at least 59 bytes, "$2", an optional minor letter, "$", cost 04..31, "$".
_BCRYPT = re.compile(r"\$2[^$]?\$(\d\d)\$.{53,}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``tls_server_config`` with paths resolved; inline PEM text where the file gave it."""

    cert_file: str = ""
    key_file: str = ""
    cert: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    curve_preferences: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: tuple[str, ...] | None = None

    def files(self) -> tuple[str, ...]:
        """The files this configuration reads: a change to any of them is a new config."""
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate_limit``: a token bucket over all requests, one token every ``interval_s``, at
    most ``burst`` stored (exporter-toolkit's golang.org/x/time/rate limiter)."""

    interval_s: float
    burst: int


@dataclass(frozen=True, slots=True)
class WebConfig:
    """One web-config file, checked; ``ssl_context`` is built from ``tls`` (None: plain HTTP)."""

    path: str | None = None
    tls: TlsSettings | None = None
    headers: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (name, bcrypt hash)
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    rate_limit: RateLimit | None = None

    def files(self) -> tuple[str, ...]:
        own = (self.path,) if self.path else ()
        return own + (self.tls.files() if self.tls else ())

    def describe(self) -> str:
        parts = ["TLS" if self.tls else "no TLS"]
        parts.append(f"basic auth for {len(self.users)} user(s)" if self.users else "no auth")
        if self.rate_limit is not None:
            parts.append(f"rate limit of one request every {self.rate_limit.interval_s:g}s "
                         f"(burst {self.rate_limit.burst})")
        return ", ".join(parts)


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """The web configuration in the file at ``path``; ConfigError lists every problem."""
    name = os.fspath(path)
    text = read_text(name, MAX_FILE_BYTES)
    return parse_web_config(text, name, Path(name).parent)


def parse_web_config(text: str, source: str, base_dir: Path) -> WebConfig:
    loader, root = compose(text, source)
    w = Walker(source, loader)
    if root is not None and not is_null(root) and not isinstance(root, MappingNode):
        w.report(root, "", f"the top level must be a mapping of keys, got {w.describe(root)}")
        raise ConfigError(w.problems)
    top = w.mapping(root, "", TOP_KEYS)
    tls_fields = top.section("tls_server_config", TLS_KEYS)
    tls_key = top.entries.get("tls_server_config", (None, None))[0]
    tls = _tls(w, tls_fields, base_dir, tls_key)
    headers = _headers(w, top.section("http_server_config", HTTP_KEYS))
    users = _users(w, top.section("basic_auth_users", None))
    rate_limit = _rate_limit(top.section("rate_limit", RATE_LIMIT_KEYS))
    if w.problems:
        raise ConfigError(w.problems)
    context = None
    if tls is not None:
        context = build_ssl_context(tls, lambda key, message: w.report(
            tls_fields.value_node(key) or tls_fields.node, tls_fields.key_path(key), message))
        if w.problems:
            raise ConfigError(w.problems)
    return WebConfig(source, tls, headers, users, context, rate_limit)


# --- sections ------------------------------------------------------------------------------


def _text(w: Walker, f: Fields, key: str) -> str:
    """A string setting; like Go's YAML decoder, a number or boolean is taken as its text."""
    node = f.value_node(key)
    if node is None or is_null(node):
        return ""
    if not isinstance(node, ScalarNode):
        w.report(node, f.key_path(key), f"expected a string, got {w.describe(node)}")
        return ""
    return str(node.value)


def _strings(w: Walker, f: Fields, key: str) -> tuple[str, ...] | None:
    node = f.value_node(key)
    if node is None:
        return None
    path = f.key_path(key)
    items = []
    for i, item in enumerate(w.sequence(node, path)):
        if not isinstance(item, ScalarNode) or is_null(item):
            w.report(item, f"{path}[{i}]", f"expected a string, got {w.describe(item)}")
        else:
            items.append((item, item.value))
    return tuple(v for _, v in items)


def _choice(
    w: Walker, f: Fields, key: str, options: dict[str, Any], default: str, noun: str
) -> str:
    value = _text(w, f, key) or default
    if value not in options:
        w.report(f.value_node(key), f.key_path(key),
                 f"unknown {noun} {quote(value)}; one of {', '.join(options)}")
        return default
    return value


def _tls(w: Walker, f: Fields, base_dir: Path, anchor: Node | None) -> TlsSettings | None:
    def path(key: str) -> str:
        text = _text(w, f, key)
        return str(base_dir / text) if text and not os.path.isabs(text) else text

    before = len(w.problems)
    s = TlsSettings(
        cert_file=path("cert_file"),
        key_file=path("key_file"),
        cert=_text(w, f, "cert"),
        key=_text(w, f, "key"),
        client_ca_file=path("client_ca_file"),
        client_ca=_text(w, f, "client_ca"),
        client_auth_type=_text(w, f, "client_auth_type"),
        min_version=_choice(w, f, "min_version", TLS_VERSIONS, "TLS12", "TLS version"),
        max_version=_choice(w, f, "max_version", TLS_VERSIONS, "TLS13", "TLS version"),
        prefer_server_cipher_suites=f.get(
            "prefer_server_cipher_suites", _boolean, True),
        client_allowed_sans=_strings(w, f, "client_allowed_sans"),
    )
    suites = _strings(w, f, "cipher_suites") or ()
    for i, name in enumerate(suites):
        if name not in CIPHER_SUITES:
            w.report(f.value_node("cipher_suites"), f"{f.key_path('cipher_suites')}[{i}]",
                     f"unknown cipher {quote(name)}; one of {', '.join(CIPHER_SUITES)}")
    curves = _strings(w, f, "curve_preferences") or ()
    for i, name in enumerate(curves):
        if name not in CURVES:
            w.report(f.value_node("curve_preferences"),
                     f"{f.key_path('curve_preferences')}[{i}]",
                     f"unknown curve {quote(name)}; one of {', '.join(CURVES)}")
    if len(w.problems) > before:
        return None
    enabled = any((s.cert_file, s.cert, s.key_file, s.key, s.client_ca_file, s.client_ca,
                   s.client_auth_type))  # fmt: skip
    if not enabled:
        return None
    auth = s.client_auth_type or "NoClientCert"
    where = anchor  # a missing key is reported where tls_server_config starts
    if not (s.cert_file or s.cert):
        w.report(where, f.key_path("cert_file"), "missing one of cert or cert_file")
    if not (s.key_file or s.key):
        w.report(where, f.key_path("key_file"), "missing one of key or key_file")
    if auth not in CLIENT_AUTH:
        w.report(f.value_node("client_auth_type"), f.key_path("client_auth_type"),
                 f"invalid ClientAuth {quote(auth)}; one of {', '.join(CLIENT_AUTH)}")
    elif CLIENT_AUTH[auth] is None:
        w.report(f.value_node("client_auth_type"), f.key_path("client_auth_type"),
                 f"{auth} (a client certificate required but not verified) is not something "
                 "Python's ssl can do; use RequireAndVerifyClientCert with client_ca_file")
    elif (s.client_ca_file or s.client_ca) and auth == "NoClientCert":
        key = "client_ca_file" if s.client_ca_file else "client_ca"
        w.report(f.value_node(key), f.key_path(key),
                 "client CAs have been configured without a client auth policy "
                 "(set client_auth_type, e.g. RequireAndVerifyClientCert)")
    if len(curves) > 1:
        w.report(f.value_node("curve_preferences"), f.key_path("curve_preferences"),
                 "Python's ssl can limit the key exchange to one curve, not a preference "
                 "order of several; list one")
    if len(w.problems) > before:
        return None
    return replace(s, client_auth_type=auth, cipher_suites=suites, curve_preferences=curves)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _headers(w: Walker, f: Fields) -> tuple[tuple[str, str], ...]:
    f.get("http2", _boolean, True)  # HTTP/2 is not served; HTTP/1.1 is what clients get
    headers = w.mapping(f.value_node("headers"), f.key_path("headers"), None)
    result = []
    for name, _key_node, value_node in headers.items():
        path = headers.key_path(name)
        value = "" if is_null(value_node) else _scalar_text(w, value_node, path)
        if name not in ALLOWED_HEADERS:
            w.report(value_node, path, f"HTTP header {quote(name)} can not be configured; "
                     f"one of {', '.join(ALLOWED_HEADERS)}")
            continue
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value not in allowed:
            w.report(value_node, path, f"invalid value for {name}: expected one of "
                     f"{', '.join(allowed)}, got {quote(value)}")
            continue
        if any(c in value for c in "\r\n\0"):
            w.report(value_node, path, "a header value cannot hold line breaks")
            continue
        if value:  # "Unset if blank", as the format says
            result.append((name, value))
    return tuple(result)


def _go_duration(value: object) -> float:
    """A duration with its unit, as Go's YAML decoder reads time.Duration (a bare number
    there means nanoseconds, which nobody means: it is refused, not guessed)."""
    if not isinstance(value, str) or not value.strip() or value.strip()[-1].isdigit():
        raise ValueError(f"expected a duration with a unit (e.g. 1s, 500ms), got "
                         f"{quote(str(value))}")
    return parse_duration(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {quote(str(value))}")
    return value


def _rate_limit(f: Fields) -> RateLimit | None:
    """None when absent or ``interval`` is 0 (exporter-toolkit: "0 to disable")."""
    if f.node is None:
        return None
    before = len(f.walker.problems)
    interval = f.get("interval", _go_duration, 0.0)
    burst = f.get("burst", _count, 0)
    if interval <= 0 or len(f.walker.problems) > before:  # off, or already said why not
        return None
    if burst == 0:  # golang's limiter would then refuse every request
        f.walker.report(f.value_node("burst") or f.node, f.key_path("burst"),
                        "a burst of 0 with an interval refuses every request; give at "
                        "least 1 (or interval 0 to turn the limit off)")
        return None
    return RateLimit(interval, burst)


def _scalar_text(w: Walker, node: Node, path: str) -> str:
    if not isinstance(node, ScalarNode):
        w.report(node, path, f"expected a string, got {w.describe(node)}")
        return ""
    return str(node.value)


def _users(w: Walker, f: Fields) -> tuple[tuple[str, str], ...]:
    users = []
    for name, _key_node, value_node in f.items():
        path = f.key_path(name)
        hashed = "" if is_null(value_node) else _scalar_text(w, value_node, path)
        match = _BCRYPT.fullmatch(hashed)
        if len(hashed) < 59:
            w.report(value_node, path, "not a bcrypt hash (too short); make one with "
                     "`htpasswd -nbBC 10 '' PASSWORD | tr -d ':\\n'`")
        elif not match or not 4 <= int(match.group(1)) <= 31:
            w.report(value_node, path, "not a bcrypt hash ($2a$, $2b$ or $2y$ and a cost "
                     "of 04 to 31)")
        else:
            users.append((name, hashed))
    return tuple(users)


# --- the SSL context ---------------------------------------------------------------------------


def build_ssl_context(tls: TlsSettings, report: Callable[[str, str], None]) -> ssl.SSLContext:
    """A server context doing what ``tls`` says; problems go to ``report(key, message)``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    suites = [CIPHER_SUITES[n] for n in tls.cipher_suites]
    minimum = TLS_VERSIONS[tls.min_version]
    if tls.cipher_suites and not any(suites) and minimum < ssl.TLSVersion.TLSv1_3:
        # Only TLS 1.3 suites listed: Go is then left with no suite below TLS 1.3.
        minimum = ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = minimum
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    if any(suites):
        try:
            ctx.set_ciphers(":".join(s for s in suites if s))
        except ssl.SSLError:
            report("cipher_suites", "this OpenSSL offers none of these cipher suites")
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        try:
            ctx.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
        except (ValueError, ssl.SSLError):
            report("curve_preferences", "this OpenSSL does not offer that curve")
    _load_key_pair(ctx, tls, report)
    mode = CLIENT_AUTH[tls.client_auth_type]
    assert mode is not None  # the parser refused the others
    if mode != ssl.CERT_NONE:
        ctx.verify_mode = mode
        if tls.client_ca_file:
            _load_client_ca(ctx, report, "client_ca_file", cafile=tls.client_ca_file)
        elif tls.client_ca:
            _load_client_ca(ctx, report, "client_ca", cadata=tls.client_ca)
        else:  # Go verifies against the system's roots then
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx


def _load_key_pair(ctx: ssl.SSLContext, tls: TlsSettings,
                   report: Callable[[str, str], None]) -> None:
    key = "cert_file" if tls.cert_file else "cert"
    for name, value in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if value and not os.path.isfile(value):
            reason = "no such file" if not os.path.exists(value) else "not a regular file"
            report(name, f"cannot read {quote(value)}: {reason}")
            return
    fds: list[int] = []
    try:
        cert_path = tls.cert_file or _memory_file(tls.cert, fds)
        key_path = tls.key_file or _memory_file(tls.key, fds)
        ctx.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as e:
        report(key, f"failed to load the certificate and key: {one_line(e.reason or str(e))}")
    except OSError as e:
        report(key, f"cannot read the certificate or key: {e.strerror or e}")
    finally:
        for fd in fds:
            os.close(fd)


def _memory_file(pem: str, fds: list[int]) -> str:
    """Inline PEM text as a path OpenSSL can open, without writing a secret to disk."""
    fd = os.memfd_create("crankshaft-web-config", os.MFD_CLOEXEC)
    fds.append(fd)
    os.write(fd, pem.encode())
    return f"/proc/self/fd/{fd}"


def _load_client_ca(ctx: ssl.SSLContext, report: Callable[[str, str], None], key: str,
                    **where: str) -> None:
    try:
        ctx.load_verify_locations(**where)
    except ssl.SSLError as e:
        if "no certificate" in str(e).lower():
            # Go accepts a CA file without certificates: then no client certificate verifies.
            return
        report(key, f"cannot load the client CA: {one_line(e.reason or str(e))}")
    except OSError as e:
        report(key, f"cannot read {quote(where.get('cafile', ''))}: {e.strerror or e}")
