"""Structured logs read back from a real journald, and the JSON log format of the daemon.

journald runs inside a private mount and network namespace (``unshare``) on tmpfs mounts,
as in notes/real-components.md: never on the host.  Without journald ``journal.send`` fails
silently, so every assertion here is on entries read back with ``journalctl -o json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require, require_tool

JOURNALD = "/lib/systemd/systemd-journald"
DEADLINE_S = 60.0
MARKER = "crankshaft-journald-test"

JOURNALD_CONF = """\
[Journal]
Storage=persistent
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
Audit=no
"""

# Runs as the namespace's first process: mounts, journald, the logging code, journalctl.
# Every step is bounded by `timeout`; journald is killed by its PID on any exit.
NAMESPACE_SCRIPT = r"""
set -eu
work=$1
python=$2
cleanup() {
    if [ -n "${JPID:-}" ]; then
        kill "$JPID" 2>/dev/null || true
        wait "$JPID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mount -t tmpfs tmpfs /var/log/journal
if [ -f /etc/systemd/journald.conf ]; then
    mount --bind "$work/journald.conf" /etc/systemd/journald.conf
fi
# Also as a drop-in (these win over the main file): a host drop-in must not turn forwarding on.
mkdir -p /run/systemd/journald.conf.d
cp "$work/journald.conf" /run/systemd/journald.conf.d/zz-crankshaft-test.conf
JOURNALD_BIN >"$work/journald.out" 2>&1 &
JPID=$!
echo "$JPID" >"$work/journald.pid"
i=0
until [ -S /run/systemd/journal/socket ]; do
    i=$((i + 1))
    if [ "$i" -gt 600 ] || ! kill -0 "$JPID" 2>/dev/null; then
        echo "journald socket did not appear" >&2; exit 90
    fi
    sleep 0.05
done
timeout 60 "$python" "$work/emit.py"
timeout 60 journalctl --sync
timeout 60 journalctl --flush
timeout 60 journalctl -D /var/log/journal -o json >"$work/journal.json"
""".replace("JOURNALD_BIN", JOURNALD)

EMIT = f"""\
import logging
from exporter.endpoint import MetricsEndpoint
from exporter.logs import setup_logging

assert setup_logging("INFO", "journal") == "journal"
log = logging.getLogger("tests.journald")
log.info("plain info line {MARKER}")
ep = MetricsEndpoint(sources=[])
ep.record_memory_usage(3000)   # above critical (2048): fired, CRITICAL
ep.record_memory_usage(100)    # below warning: resolved
log.debug("debug line {MARKER} (below the level: not sent)")
log.info("last line {MARKER}")
ep.close()
"""


def run_in_namespace(work: Path) -> subprocess.CompletedProcess[str]:
    """Run the script under unshare; on a timeout, TERM it (its trap kills journald)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    argv = [
        "unshare",
        "--mount",
        "--net",
        "--propagation",
        "private",
        "/bin/sh",
        str(work / "ns.sh"),
        str(work),
        sys.executable,
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=DEADLINE_S * 3)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        kill_journald(work)
        pytest.fail(f"the journald namespace script timed out: {out}\n{err}")
    finally:
        kill_journald(work)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def kill_journald(work: Path) -> None:
    """Last resort: if our journald outlived its script, end it by its recorded PID."""
    pid_file = work / "journald.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return  # gone
    if comm.startswith("systemd-journal"):
        os.kill(pid, signal.SIGKILL)


def unshare_works() -> bool:
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--net", "--propagation", "private", "true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def require_journald() -> None:
    require_tool("unshare")
    require_tool("journalctl")
    require(os.path.exists(JOURNALD), f"{JOURNALD} is not installed")
    try:
        from systemd import journal  # noqa: F401
    except ImportError:
        journal_ok = False
    else:
        journal_ok = True
    require(journal_ok, "systemd-python (systemd.journal) is not importable")
    require(os.geteuid() == 0, "a private journald needs root (mount namespaces)")
    require(unshare_works(), "unshare --mount --net does not work here")
    for folder in ("/run/systemd", "/run/log", "/var/log/journal"):
        require(os.path.isdir(folder), f"{folder} does not exist to mount a tmpfs on")


CODE_LINE_BUG = (
    "BUG: exporter/logs.py:79 JournalHandler.emit passes CODE_LINE=str(record.lineno) to "
    "systemd.journal.send, which formats CODE_LINE with {:d} (it must be an int): every record "
    "raises ValueError inside emit, handleError prints a traceback on stderr and nothing "
    "reaches journald"
)


def journal_send_captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Entries as systemd.journal.send would hand them to sendv, captured instead of sent."""
    try:
        from systemd import journal
    except ImportError:
        pytest.skip("systemd-python is not installed")
    sent: list[dict[str, str]] = []

    def sendv(*lines: str | bytes) -> None:
        entry = {}
        for line in lines:
            text = line.decode() if isinstance(line, bytes) else line
            key, _, value = text.partition("=")
            entry[key] = value
        sent.append(entry)

    monkeypatch.setattr(journal, "sendv", sendv)
    return sent


def test_journal_handler_hands_systemd_python_valid_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without journald: systemd.journal.send's own argument handling, sendv captured."""
    import logging

    from exporter.logs import JournalHandler

    sent = journal_send_captured(monkeypatch)
    handler = JournalHandler()
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    record = logging.LogRecord(
        "tests.journald", logging.WARNING, __file__, 42, "hi %s", ("there",), None, func="emitter"
    )
    handler.emit(record)
    assert not errors, "JournalHandler.emit failed inside systemd.journal.send"
    assert sent == [
        {
            "MESSAGE": "hi there",
            "CODE_FILE": __file__,
            "CODE_LINE": "42",
            "CODE_FUNC": "emitter",
            "PRIORITY": "4",
            "SYSLOG_IDENTIFIER": "crankshaft-exporter",
            "LOGGER": "tests.journald",
            "THREAD_NAME": record.threadName,
        }
    ]


@pytest.mark.real
def test_alert_transitions_reach_journald_with_their_fields(tmp_path: Path) -> None:
    require_journald()
    (tmp_path / "journald.conf").write_text(JOURNALD_CONF)
    (tmp_path / "ns.sh").write_text(textwrap.dedent(NAMESPACE_SCRIPT))
    (tmp_path / "emit.py").write_text(EMIT)

    result = run_in_namespace(tmp_path)
    journald_out = (
        (tmp_path / "journald.out").read_text(errors="replace")
        if (tmp_path / "journald.out").exists()
        else ""
    )
    assert result.returncode == 0, (result.stdout, result.stderr, journald_out)
    assert "Traceback" not in result.stderr, result.stderr

    entries = [
        json.loads(line)
        for line in (tmp_path / "journal.json").read_text().splitlines()
        if line.strip()
    ]
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "crankshaft-exporter"]
    assert ours, f"no crankshaft-exporter entries among {len(entries)}"

    def one(predicate: Any, what: str) -> dict[str, str]:
        found = [e for e in ours if predicate(e)]
        assert len(found) == 1, (what, [e.get("MESSAGE") for e in ours])
        return found[0]

    plain = one(lambda e: e.get("MESSAGE") == f"plain info line {MARKER}", "the plain line")
    assert plain["PRIORITY"] == "6"
    assert plain["LOGGER"] == "tests.journald"
    assert not any(k.startswith("ALERT_") for k in plain)
    assert not any("debug line" in e.get("MESSAGE", "") for e in ours)
    one(lambda e: e.get("MESSAGE") == f"last line {MARKER}", "the last line")

    fired = one(lambda e: e.get("ALERT_KIND") == "fired", "the fired transition")
    assert fired["PRIORITY"] == "2"
    assert fired["ALERT_METRIC"] == "memory_usage"
    assert fired["ALERT_LEVEL"] == "CRITICAL"
    assert fired["ALERT_VALUE"] == "3000.0"
    assert fired["ALERT_WARNING_THRESHOLD"] == "1536.0"
    assert fired["ALERT_CRITICAL_THRESHOLD"] == "2048.0"
    assert fired["ALERT_DESCRIPTION"] == "Memory usage high"
    assert fired["SYSLOG_IDENTIFIER"] == "crankshaft-exporter"
    assert "memory_usage" in fired["MESSAGE"]
    assert fired["CODE_FILE"].endswith("endpoint.py")

    resolved = one(lambda e: e.get("ALERT_KIND") == "resolved", "the resolved transition")
    assert resolved["PRIORITY"] == "6"
    assert resolved["ALERT_METRIC"] == "memory_usage"
    assert resolved["ALERT_VALUE"] == "100.0"
    assert resolved["SYSLOG_IDENTIFIER"] == "crankshaft-exporter"
    # in the order they happened
    order = [e["MESSAGE"] for e in ours]
    assert order.index(fired["MESSAGE"]) < order.index(resolved["MESSAGE"])


# --- the JSON log format --------------------------------------------------------------------


def test_daemon_json_logs_carry_the_alert_as_an_object(daemon_factory, tmp_path) -> None:
    cfg = tmp_path / "exporter.yaml"  # the seed's rule, without the shipped 5m `for`
    cfg.write_text("alerts: [{metric: active_connections, warning: 50, critical: 100,"
                   " description: Too many active connections}]\n")
    d = daemon_factory("--interval", "100ms", "--log-format", "json", "--config", str(cfg))
    r = d.post_json("/metrics/record", {"active_connections": 120})
    assert r.status in (200, 202), r.body

    def alert_lines() -> list[dict[str, Any]]:
        docs = []
        for line in d.log().splitlines():
            doc = json.loads(line)  # every line is one JSON object, nothing else
            if "alert" in doc:
                docs.append(doc)
        return docs

    deadline = time.monotonic() + DEADLINE_S
    while not (found := alert_lines()):
        assert d.proc.poll() is None, d.log()
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.02)
    doc = found[0]
    assert doc["level"] == "CRITICAL"
    assert doc["logger"] == "exporter.endpoint"
    assert "active_connections" in doc["message"]
    assert doc["time"].endswith("Z")
    alert = doc["alert"]
    assert alert["metric"] == "active_connections"
    assert alert["level"] == "CRITICAL"
    assert alert["kind"] == "fired"
    assert alert["value"] == "120.0"
    assert alert["warning_threshold"] == "50.0"
    assert alert["critical_threshold"] == "100.0"
    assert alert["description"] == "Too many active connections"
