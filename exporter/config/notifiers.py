"""The ``notifiers:`` section: webhooks and an Alertmanager that alert transitions go to.

Header names and values are checked here because they go verbatim into HTTP requests: a line
break in a value would let a config smuggle extra headers.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode

from exporter.config import checks
from exporter.config.model import (
    AlertmanagerConfig,
    NotifiersConfig,
    WebhookConfig,
)
from exporter.config.yamltree import Fields, Walker, is_null

MAX_TIMEOUT = 3600.0
MAX_RETRIES = 100
MAX_RETRY_WINDOW = 7 * 86400.0
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed

_WEBHOOK_KEYS = ("url", "timeout", "max_retries", "retry_window", "headers")
_ALERTMANAGER_KEYS = ("url", "timeout", "resend_interval", "retry_window")
_TIMEOUT = checks.duration(0, MAX_TIMEOUT, lo_open=True)
_RETRY_WINDOW = checks.duration(0, MAX_RETRY_WINDOW)
_HOOK = WebhookConfig(url="")  # the defaults of a webhook's optional keys


def notifiers(w: Walker, f: Fields) -> NotifiersConfig:
    """Each webhook and the Alertmanager; an invalid webhook is reported and left out."""
    webhooks = []
    path = f.key_path("webhooks")
    for i, item in enumerate(w.sequence(f.value_node("webhooks"), path)):
        hook = w.mapping(item, f"{path}[{i}]", _WEBHOOK_KEYS, null_ok=False)
        if not isinstance(item, MappingNode) or not hook.require("url", "required"):
            continue
        before = len(w.problems)
        config = WebhookConfig(
            url=hook.get("url", checks.url, ""),
            timeout=hook.get("timeout", _TIMEOUT, _HOOK.timeout),
            max_retries=hook.get("max_retries", checks.integer(0, MAX_RETRIES), _HOOK.max_retries),
            retry_window=hook.get("retry_window", _RETRY_WINDOW, _HOOK.retry_window),
            headers=_headers(w, hook.section("headers", None)),
        )
        if len(w.problems) == before:
            webhooks.append(config)
    alertmanager = None
    node = f.value_node("alertmanager")
    if node is not None and not is_null(node):
        am = f.section("alertmanager", _ALERTMANAGER_KEYS)
        d = AlertmanagerConfig()
        alertmanager = AlertmanagerConfig(
            url=am.get("url", checks.url, d.url),
            timeout=am.get("timeout", _TIMEOUT, d.timeout),
            resend_interval=am.get(
                "resend_interval", checks.duration(1, MAX_RETRY_WINDOW), d.resend_interval
            ),
            retry_window=am.get("retry_window", _RETRY_WINDOW, d.retry_window),
        )
    return NotifiersConfig(webhooks=tuple(webhooks), alertmanager=alertmanager)


def _headers(w: Walker, f: Fields) -> tuple[tuple[str, str], ...]:
    headers = []
    for name, key_node, value_node in f.items():
        if not _HEADER_NAME.fullmatch(name):
            w.report(key_node, f.key_path(name), "not a valid HTTP header name")
            continue
        value = w.value(value_node, f.key_path(name), _header_value, None)
        if value is not None:
            headers.append((name, value))
    return tuple(headers)


def _header_value(value: object) -> str:
    text = checks.string(empty_ok=True)(value)
    if _CONTROL.search(text):  # a line break would smuggle in further headers
        raise ValueError("a header value must not contain line breaks or control characters")
    return text
