"""The command line as a user meets it: ``python -m exporter ...`` as a real subprocess.

Every failure a user can cause must end with one clear line per problem and the documented
exit status (2 usage, 78 EX_CONFIG, 1 otherwise), never a traceback.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import exporter
from tests.conftest import REPO

EX_USAGE = 2
EX_CONFIG = 78
TIMEOUT_S = 60


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python -m exporter ARGS`` with the checkout importable wherever it runs."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("NOTIFY_SOCKET", None)  # never talk to a real systemd from a test
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


# --- --version and default-config ----------------------------------------------------------


def test_version_prints_name_and_version() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"crankshaft-exporter {exporter.__version__}"
    assert_no_traceback(result)


def test_default_config_is_the_shipped_file_and_is_valid(tmp_path: Path) -> None:
    result = cli("default-config")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shipped = (REPO / "config" / "exporter.yaml").read_text(encoding="utf-8")
    assert result.stdout == shipped

    path = tmp_path / "exporter.yaml"
    path.write_text(result.stdout, encoding="utf-8")
    check = cli("check-config", str(path))
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""
    assert check.stdout.strip() == f"{path}: valid"


def test_the_shipped_config_file_itself_passes_check_config() -> None:
    check = cli("check-config", "config/exporter.yaml")
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "config/exporter.yaml: valid"


def test_check_config_explain_lists_each_source_with_its_options(tmp_path: Path) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text("board_health: {thermal_zone: soc-thermal}\nprocess_detail:\n"
                    "  enabled: false\n", encoding="utf-8")
    result = cli("check-config", str(path), "--explain")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"{path}: valid", "sources:"]
    assert "  process_detail (disabled; section process_detail:)" in lines
    assert "  board_health (enabled; section board_health:)" in lines
    assert "    thermal_zone: soc-thermal" in lines
    assert "      where sysfs is mounted" in lines  # the option's help


# --- check-config on bad files -------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One problem line: FILE[:LINE]: [KEY.PATH: ]..., holding ``text`` somewhere after."""

    line: int | None
    key: str | None  # None: a problem of the file or its YAML, without a key path
    text: str


# name -> (file content or None for "no such file", the problems expected, in order)
BAD_CONFIGS: dict[str, tuple[str | None, list[Expected]]] = {
    "unknown_key_with_suggestion": (
        'listen: ":9001"\nintervall: 60s\n',
        [Expected(2, "intervall", 'unknown key (did you mean "interval"?)')],
    ),
    "nested_unknown_key_with_suggestion": (
        "history:\n  max_sample: 10\n",
        [Expected(2, "history.max_sample", 'did you mean "max_samples"?')],
    ),
    "negative_interval": (
        "# a comment\ninterval: -5\n",
        [Expected(2, "interval", "negative")],
    ),
    "duration_with_unknown_unit": (
        "interval: 1x\n",
        [Expected(1, "interval", 'invalid duration "1x"')],
    ),
    "warning_above_critical": (
        "alerts:\n  - metric: memory_usage\n    warning: 3000\n    critical: 2048\n",
        [Expected(3, "alerts[0].warning", "3000 is above critical (2048)")],
    ),
    "wrong_types": (
        "history:\n"
        '  max_samples: "many"\n'
        "logging:\n"
        "  level: 5\n"
        "alerts:\n"
        "  - metric: cpu_usage\n"
        '    warning: "80"\n'
        '    enabled: "true"\n'
        "connections:\n"
        "  port: 70000\n",
        [
            Expected(2, "history.max_samples", "expected an integer"),
            Expected(4, "logging.level", "expected a log level"),
            Expected(7, "alerts[0].warning", "expected a number"),
            Expected(8, "alerts[0].enabled", "expected true or false"),
            Expected(10, "connections.port", "between 1 and 65535"),
        ],
    ),
    "bad_target_kind": (
        "target:\n  kind: proces\n  value: 12\n",
        [Expected(2, "target.kind", 'unknown kind "proces"')],
    ),
    "target_kind_without_its_value": (
        "target: {kind: pid}\n",
        [Expected(1, "target.value", 'required for kind "pid"')],
    ),
    "listen_port_out_of_range": (
        'listen: "127.0.0.1:99999"\n',
        [Expected(1, "listen", "0..65535")],
    ),
    "listen_without_port": (
        'listen: "localhost"\n',
        [Expected(1, "listen", "has no port")],
    ),
    "listen_not_a_string": (
        "listen: 9001\n",
        [Expected(1, "listen", "HOST:PORT")],
    ),
    "yaml_syntax_error": (
        "interval: 10s\nhistory:\n  max_samples: [1\n",
        [Expected(4, None, "invalid YAML")],
    ),
    "duplicate_key": (
        "interval: 10s\nhistory:\n  max_samples: 10\ninterval: 20s\n",
        [Expected(4, "interval", "duplicate key (first on line 1)")],
    ),
    "token_file_missing": (
        "http:\n  ingest_token_file: no-such.token\n",
        [Expected(2, "http.ingest_token_file", "no-such.token")],
    ),
    "missing_file": (None, [Expected(None, None, "cannot read")]),
}


def write_config(tmp_path: Path, name: str, content: str | None) -> Path:
    path = tmp_path / f"{name}.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    return path


def assert_problem_lines(stderr_lines: list[str], path: Path, expected: list[Expected]) -> None:
    assert len(stderr_lines) == len(expected), stderr_lines
    for line, want in zip(stderr_lines, expected, strict=True):
        where = str(path) if want.line is None else f"{path}:{want.line}"
        prefix = f"{where}: " if want.key is None else f"{where}: {want.key}: "
        assert line.startswith(prefix), (line, prefix)
        assert want.text in line[len(prefix) :], (line, want.text)


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_check_config_reports_each_problem_on_one_line(tmp_path: Path, name: str) -> None:
    content, expected = BAD_CONFIGS[name]
    path = write_config(tmp_path, name, content)
    result = cli("check-config", str(path))
    assert result.returncode == EX_CONFIG, (result.returncode, result.stderr)
    assert_no_traceback(result)
    assert result.stdout == ""
    assert_problem_lines(result.stderr.splitlines(), path, expected)


def test_check_config_resolves_the_token_file_next_to_the_config(tmp_path: Path) -> None:
    """A relative ingest_token_file is relative to the config's folder, not to the cwd."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "token").write_text("s3cret\n")
    path = conf_dir / "exporter.yaml"
    path.write_text("http:\n  ingest_token_file: token\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = cli("check-config", str(path), cwd=elsewhere)
    assert result.returncode == 0, result.stderr


def test_check_config_on_a_directory_is_a_config_error(tmp_path: Path) -> None:
    result = cli("check-config", str(tmp_path))
    assert result.returncode == EX_CONFIG
    assert_no_traceback(result)
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"{tmp_path}: cannot read")


# --- run --------------------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port this test holds bound (and listening) while the daemon tries it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_run_with_an_invalid_config_exits_78_before_binding(tmp_path: Path, busy_port: int) -> None:
    """The config is validated before the port is bound: on a busy port a bad config still
    gives 78 and its problems, never "cannot listen" (which would mean it tried to bind)."""
    content, expected = BAD_CONFIGS["wrong_types"]
    path = write_config(tmp_path, "bad", content)
    result = cli("run", "--config", str(path), "--listen", f"127.0.0.1:{busy_port}")
    assert result.returncode == EX_CONFIG, result.stderr
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    assert "cannot listen" not in result.stderr
    assert "listening on" not in result.stderr + result.stdout
    assert lines[-1] == "crankshaft-exporter: invalid configuration, not starting"
    assert_problem_lines(lines[:-1], path, expected)


def test_run_with_a_missing_config_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = cli("run", "--config", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode == EX_CONFIG
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}: cannot read")
    assert lines[-1] == "crankshaft-exporter: invalid configuration, not starting"
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("flag", "value", "text"),
    [
        ("--interval", "1x", 'invalid duration "1x"'),
        ("--interval", "-1", "negative"),
        ("--listen", "nohost", "has no port"),
        ("--listen", "19303", 'write HOST:PORT, e.g. ":19303"'),
        ("--target", "name", 'kind "name" needs a value'),
        ("--target", "proc:1", 'unknown kind "proc"'),
        ("--target", "pid:-4", "positive integer"),
        ("--listen", "127.0.0.1:65536", "0..65535"),
    ],
)
def test_run_with_an_invalid_setting_on_the_command_line_exits_78(
    flag: str, value: str, text: str
) -> None:
    args = ["run", flag, value]
    if flag != "--listen":
        args += ["--listen", "127.0.0.1:0"]
    result = cli(*args)
    assert result.returncode == EX_CONFIG, result.stderr
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert text in lines[0]
    assert lines[0].startswith("command line: ")
    assert "listening on" not in result.stderr


def test_run_on_a_port_in_use_exits_1_with_one_line(busy_port: int) -> None:
    result = cli("run", "--listen", f"127.0.0.1:{busy_port}")
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"crankshaft-exporter: cannot listen on 127\.0\.0\.1:{busy_port}: .+", lines[0]
    ), lines[0]


# --- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["run", "--bogus"],
        ["run", "--interval"],
        ["run", "--log-level", "LOUD"],
        ["run", "--log-format", "xml"],
        ["check-config"],
        ["check-config", "a.yaml", "b.yaml"],
        ["default-config", "extra"],
        ["alert-rules", "--bogus"],
        ["frobnicate"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bogus_command_lines_exit_2_with_usage(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == EX_USAGE, (result.returncode, result.stderr)
    assert_no_traceback(result)
    assert result.stdout == ""
    assert "usage: crankshaft-exporter" in result.stderr
    assert "error:" in result.stderr.splitlines()[-1]


def test_run_with_target_watches_that_process(tmp_path: Path) -> None:
    """``--target KIND:VALUE`` is the file's ``target:`` in one word, and wins over it."""
    from tests.conftest import start_daemon

    cfg = tmp_path / "exporter.yaml"
    cfg.write_text("target: {kind: none}\n")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        daemon = start_daemon(tmp_path, "--config", str(cfg), "--target", f"pid:{child.pid}")
        try:
            assert f"target pid {child.pid}" in daemon.log()
        finally:
            daemon.stop()
    finally:
        child.kill()
        child.wait()
