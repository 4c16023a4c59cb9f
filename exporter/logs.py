"""Log output: journald with structured fields under systemd, else lines on stderr.

Alert transitions are logged with the event attached (``extra={"alert_event": event}``);
the journald and JSON outputs turn it into fields (ALERT_METRIC, ALERT_LEVEL, ...), so
``journalctl -u crankshaft-exporter ALERT_LEVEL=CRITICAL`` finds every critical transition.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from typing import Any

LOG_FORMATS = ("auto", "text", "json", "journal")
IDENTIFIER = "crankshaft-exporter"
# syslog priorities, as journald and `journalctl -p` use them
PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def alert_fields(record: logging.LogRecord) -> dict[str, str]:
    event = getattr(record, "alert_event", None)
    if event is None:
        return {}
    fields = {
        "ALERT_KIND": event.kind,
        "ALERT_METRIC": event.metric,
        "ALERT_LEVEL": event.level,
        "ALERT_VALUE": repr(event.value),
        "ALERT_DESCRIPTION": event.description,
    }
    if event.previous_level is not None:
        fields["ALERT_PREVIOUS_LEVEL"] = event.previous_level
    if event.warning_threshold is not None:
        fields["ALERT_WARNING_THRESHOLD"] = repr(event.warning_threshold)
    if event.critical_threshold is not None:
        fields["ALERT_CRITICAL_THRESHOLD"] = repr(event.critical_threshold)
    for key, value in event.labels.items():
        fields[f"ALERT_{key.upper()}"] = value
    return fields


def _priority(levelno: int) -> int:
    for threshold in sorted(PRIORITY, reverse=True):
        if levelno >= threshold:
            return PRIORITY[threshold]
    return 7


class JournalHandler(logging.Handler):
    """Sends each record to journald through systemd-python with its fields."""

    def __init__(self) -> None:
        super().__init__()
        # optional dependency (checked by the caller), untyped: imported by name
        self._send = importlib.import_module("systemd.journal").send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = alert_fields(record)
            if record.exc_info:
                fields["EXCEPTION_TEXT"] = logging.Formatter().formatException(record.exc_info)
            self._send(
                record.getMessage(),
                PRIORITY=str(_priority(record.levelno)),
                SYSLOG_IDENTIFIER=IDENTIFIER,
                LOGGER=record.name,
                THREAD_NAME=record.threadName or "",
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **fields,
            )
        except Exception:
            self.handleError(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = alert_fields(record)
        if fields:
            doc["alert"] = {k[len("ALERT_") :].lower(): v for k, v in fields.items()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def journal_available() -> bool:
    try:
        importlib.import_module("systemd.journal")
    except ImportError:
        return False
    return True


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode when stderr is connected to the journal."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, inode = stream.partition(":")
    if not dev.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(inode)


def resolve_format(fmt: str) -> str:
    if fmt == "auto":
        return "journal" if stderr_is_journal() and journal_available() else "text"
    if fmt == "journal" and not journal_available():
        return "text"
    return fmt


def setup_logging(level: str = "INFO", fmt: str = "auto") -> str:
    """Configure the root logger; returns the format actually used."""
    chosen = resolve_format(fmt)
    if chosen == "journal":
        handler: logging.Handler = JournalHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        if chosen == "json":
            handler.setFormatter(JsonFormatter())
        elif stderr_is_journal():  # journald adds its own timestamps and priorities
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return chosen


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)
