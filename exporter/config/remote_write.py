"""The ``remote_write:`` list: receivers the exporter pushes its samples to.

Spelled as Prometheus' own ``remote_write`` entries (``url``, ``name``, ``tls_config``,
``basic_auth``, ``authorization``, ``queue_config``, ``remote_timeout``) so an operator's
knowledge carries over, plus ``labels`` (what Prometheus calls external labels: added to
every series, e.g. ``vehicle``), ``instance`` and ``max_sample_age``.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Callable
from pathlib import Path

from yaml.nodes import MappingNode

from exporter.config import checks
from exporter.config.model import RemoteWriteConfig, TlsClientConfig
from exporter.config.secrets import read_secret
from exporter.config.yamltree import Fields, Walker

_ENTRY_KEYS = (
    "url", "name", "labels", "instance", "max_sample_age", "remote_timeout",
    "queue_config", "tls_config", "basic_auth", "authorization",
)  # fmt: skip
_QUEUE_KEYS = ("max_samples_per_send", "min_backoff", "max_backoff")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")
_BASIC_KEYS = ("username", "password", "password_file")
_AUTHZ_KEYS = ("type", "credentials", "credentials_file")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_SAMPLE_AGE = 366 * 86400.0
MAX_SAMPLES_PER_SEND = 100_000
_DEFAULT = RemoteWriteConfig(url="")


def remote_write(
    w: Walker, top: Fields, resolve: Callable[[str], str]
) -> tuple[RemoteWriteConfig, ...]:
    """Every valid entry; an invalid one is reported (with its line) and left out."""
    path = top.key_path("remote_write")
    entries: list[RemoteWriteConfig] = []
    names: set[str] = set()
    for i, item in enumerate(w.sequence(top.value_node("remote_write"), path)):
        here = f"{path}[{i}]"
        f = w.mapping(item, here, _ENTRY_KEYS, null_ok=False)
        if not isinstance(item, MappingNode) or not f.require("url", "required"):
            continue
        before = len(w.problems)
        entry = _entry(w, f, resolve)
        if entry.name in names:
            w.report(f.value_node("name") or item, f.key_path("name"),
                     f"two remote_write entries are named {entry.name!r}; names must differ")
        names.add(entry.name)
        if entry.min_backoff > entry.max_backoff:
            w.report(item, f.key_path("queue_config"), "min_backoff is above max_backoff")
        if len(w.problems) == before:
            entries.append(entry)
    return tuple(entries)


def _entry(w: Walker, f: Fields, resolve: Callable[[str], str]) -> RemoteWriteConfig:
    d = _DEFAULT
    url = f.get("url", checks.url, "")
    queue = f.section("queue_config", _QUEUE_KEYS)
    backoff = checks.duration(0, 3600, lo_open=True)
    return RemoteWriteConfig(
        url=url,
        name=f.get("name", _name, "") or _default_name(url),
        labels=_labels(w, f.section("labels", None)),
        instance=f.get("instance", checks.optional(checks.string()), None),
        max_sample_age=f.get(
            "max_sample_age", checks.duration(0, MAX_SAMPLE_AGE, lo_open=True), d.max_sample_age
        ),
        remote_timeout=f.get(
            "remote_timeout", checks.duration(0, 3600, lo_open=True), d.remote_timeout
        ),
        max_samples_per_send=queue.get(
            "max_samples_per_send", checks.integer(1, MAX_SAMPLES_PER_SEND),
            d.max_samples_per_send,
        ),
        min_backoff=queue.get("min_backoff", backoff, d.min_backoff),
        max_backoff=queue.get("max_backoff", backoff, d.max_backoff),
        tls_config=_tls(f.section("tls_config", _TLS_KEYS), f, resolve),
        basic_auth=_basic_auth(w, f.section("basic_auth", _BASIC_KEYS), f, resolve),
        authorization=_authorization(w, f.section("authorization", _AUTHZ_KEYS), f, resolve),
    )


def _default_name(url: str) -> str:
    """As Prometheus names an unnamed queue: from a hash of its URL (stable across starts)."""
    return hashlib.sha256(url.encode()).hexdigest()[:6]


def _name(value: object) -> str:
    text = checks.string()(value)
    if not _NAME.fullmatch(text):
        raise ValueError("a name is 1-64 letters, digits, '_', '.' or '-'")
    return text


def _labels(w: Walker, f: Fields) -> tuple[tuple[str, str], ...]:
    labels = []
    for name, key_node, value_node in f.items():
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            w.report(key_node, f.key_path(name),
                     "not a label name (letters, digits and '_', not starting with a digit "
                     "or '__')")
            continue
        value = w.value(value_node, f.key_path(name), checks.string(), None)
        if value is not None:
            labels.append((name, value))
    return tuple(sorted(labels))


def _file(resolve: Callable[[str], str]) -> Callable[[object], str | None]:
    return checks.optional(lambda v: resolve(checks.string()(v)))


def _tls(f: Fields, entry: Fields, resolve: Callable[[str], str]) -> TlsClientConfig | None:
    if entry.value_node("tls_config") is None:
        return None
    tls = TlsClientConfig(
        ca_file=f.get("ca_file", _file(resolve), None),
        cert_file=f.get("cert_file", _file(resolve), None),
        key_file=f.get("key_file", _file(resolve), None),
        insecure_skip_verify=f.get("insecure_skip_verify", checks.boolean, False),
    )
    if bool(tls.cert_file) != bool(tls.key_file):
        f.walker.report(entry.value_node("tls_config"), entry.key_path("tls_config"),
                        "cert_file and key_file go together")
        return tls
    try:  # the files as the sender will read them: a wrong path is said now, with its line
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except OSError as e:  # ssl.SSLError included
        f.walker.report(entry.value_node("tls_config"), entry.key_path("tls_config"),
                        f"cannot use these files: {e.strerror or e}")
    return tls


def _secret(w: Walker, f: Fields, inline: str, file_key: str,
            resolve: Callable[[str], str]) -> str | None:
    """The value of ``inline``, or what the file named by ``file_key`` holds; not both."""
    value = f.get(inline, checks.string(), None)
    file_name = f.get(file_key, checks.string(), None)
    if value is not None and file_name is not None:
        w.report(f.value_node(file_key), f.key_path(file_key),
                 f"give {inline} or {file_key}, not both")
        return None
    if file_name is not None:
        try:
            return read_secret(Path(resolve(file_name)))
        except ValueError as e:
            w.report(f.value_node(file_key), f.key_path(file_key), str(e))
    return value


def _basic_auth(w: Walker, f: Fields, entry: Fields,
                resolve: Callable[[str], str]) -> tuple[str, str] | None:
    if entry.value_node("basic_auth") is None:
        return None
    if not f.require("username", "required with basic_auth"):
        return None
    user = f.get("username", checks.string(), "")
    if ":" in user:
        w.report(f.value_node("username"), f.key_path("username"), "a user name cannot hold ':'")
    password = _secret(w, f, "password", "password_file", resolve)
    return user, password or ""


def _authorization(w: Walker, f: Fields, entry: Fields,
                   resolve: Callable[[str], str]) -> tuple[str, str] | None:
    if entry.value_node("authorization") is None:
        return None
    if entry.value_node("basic_auth") is not None:
        w.report(entry.value_node("authorization"), entry.key_path("authorization"),
                 "basic_auth and authorization cannot both be set")
        return None
    kind = f.get("type", checks.string(), "Bearer")
    if not _LABEL_NAME.fullmatch(kind) or kind.lower() == "basic":
        w.report(f.value_node("type"), f.key_path("type"),
                 "an authorization type is one word (Bearer by default); for Basic use basic_auth")
    credentials = _secret(w, f, "credentials", "credentials_file", resolve)
    if credentials is not None and (
        not credentials or any(c.isspace() or not c.isprintable() for c in credentials)
    ):
        w.report(f.value_node("credentials"), f.key_path("credentials"),
                 "credentials must be one word, without spaces or line breaks")
        return None
    if credentials is None:
        w.report(f.node, f.key_path("credentials"), "credentials or credentials_file required")
        return None
    return kind, credentials
