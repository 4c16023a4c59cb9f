"""The YAML configuration: model, loader with line-numbered problems, and the default file.

The daemon is the only caller (the one composition root): it calls :func:`load_config` at
start and on reload, and builds everything from the returned :class:`Config`.
"""

from exporter.config.default import default_config_text
from exporter.config.durations import format_duration, parse_duration
from exporter.config.errors import ConfigError, Problem
from exporter.config.loader import load_config, parse_config
from exporter.config.model import (
    AlertmanagerConfig,
    Config,
    ConnectionsConfig,
    ExtensionsConfig,
    HistoryConfig,
    HttpConfig,
    LatencyConfig,
    ListenAddress,
    LoggingConfig,
    NotifiersConfig,
    WebhookConfig,
)

__all__ = [
    "AlertmanagerConfig",
    "Config",
    "ConfigError",
    "ConnectionsConfig",
    "ExtensionsConfig",
    "HistoryConfig",
    "HttpConfig",
    "LatencyConfig",
    "ListenAddress",
    "LoggingConfig",
    "NotifiersConfig",
    "Problem",
    "WebhookConfig",
    "default_config_text",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]
