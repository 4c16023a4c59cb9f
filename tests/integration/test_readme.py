"""README is executable truth: its marked shell blocks run as written against a real daemon,
and its tables of outputs (CSV columns, metric families, JSON keys) match what the daemon
serves on the built-in defaults.

A block is marked by an HTML comment on the line before its fence:
``<!-- readme-test: cli -->`` (run in a fresh folder with ``.venv`` the test's virtualenv),
``<!-- readme-test: daemon -->`` (each line started as the daemon, with ``--listen
127.0.0.1:0`` added so that it does not take port 9001), ``<!-- readme-test: api -->``
(run with ``localhost:9001`` pointing at a daemon; ``curl`` fails on an HTTP error, as
``curl -f`` does, so a 4xx the reader would only see as JSON fails here).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, RunningDaemon, launch_daemon, require_tool
from tests.helpers import poll

README = (REPO / "README.md").read_text()
BLOCK = re.compile(r"<!-- readme-test: (\w+) -->\n```sh\n(.*?)```", re.DOTALL)
VENV = Path(sys.prefix)


def blocks(kind: str) -> list[str]:
    found = [body for k, body in BLOCK.findall(README) if k == kind]
    assert found, f"README has no block marked readme-test: {kind}"
    return found


def bash(script: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_readme_marks_each_kind_of_block() -> None:
    assert {k for k, _ in BLOCK.findall(README)} == {"cli", "daemon", "api"}


def test_cli_commands_work_as_written_after_the_run_command(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(VENV)  # what `make run` leaves in the clone
    for script in blocks("cli"):
        done = bash(script, tmp_path)
        assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr}"
        assert "Traceback" not in done.stderr
    out = done.stdout
    # --help shows the common run options with their help texts
    for option in ("--listen HOST:PORT", "--target KIND:VALUE", "--config FILE",
                   "--interval SECONDS", "--log-level LEVEL     DEBUG, INFO"):
        assert option in out, option
    assert "exporter.yaml: valid" in out
    assert "groups:" in out and (tmp_path / "exporter.yaml").stat().st_size > 1000


def test_the_quick_try_command_runs_and_says_where_to_look(tmp_path: Path) -> None:
    for script in blocks("daemon"):
        lines = [line for line in script.splitlines() if line.strip()]
        *before, run = lines
        assert run.startswith("crankshaft-exporter "), run
        argv = ["bash", "-c", f". {VENV}/bin/activate && {' && '.join(before) or 'true'} "
                f"&& exec {run} --listen 127.0.0.1:0"]
        d = launch_daemon(argv, tmp_path / "quick-try.log", {"PATH": "/usr/bin:/bin"})
        try:
            assert f"open http://127.0.0.1:{d.port}/ for the dashboard" in d.log()
            assert f"http://127.0.0.1:{d.port}/metrics" in d.log()
            health = poll(lambda d=d: d.request("/healthz"), lambda r: r.status == 200,
                          "the first collection").json()
            if "name:" in run and health["target_up"] is False:  # nothing runs by that name
                assert health["status"] == "degraded"
                assert health["target_missing"]["looked_for"] in run.replace(":", " ")
            assert d.request("/").status == 200
        finally:
            d.stop()


def test_api_commands_work_as_written(daemon: RunningDaemon, tmp_path: Path) -> None:
    require_tool("curl")
    poll(lambda: daemon.request("/healthz"), lambda r: r.status == 200, "the first collection")
    prelude = 'curl() { command curl -fsS "$@"; }\n'
    for script in blocks("api"):
        here = script.replace("localhost:9001", f"127.0.0.1:{daemon.port}")
        assert here != script, script
        done = bash(prelude + here, tmp_path)
        assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr}"
        assert '"error"' not in done.stdout


# --- tables of outputs -----------------------------------------------------------------------


def test_the_csv_columns_readme_lists_are_the_header(daemon: RunningDaemon) -> None:
    row = next(line for line in README.splitlines() if line.startswith("| `GET /metrics/csv"))
    listed = next(code for code in re.findall(r"`([^`]+)`", row) if code.startswith("timestamp,"))
    header = daemon.request("/metrics/csv?last_n=0").text.splitlines()[0]
    assert listed == header


def expand(name: str) -> list[str]:
    """`a_{b,c}_d` -> a_b_d, a_c_d (README's shorthand); `a{label,other}` -> a."""
    name = re.sub(r"\{[^}]*\}$", "", name)
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_every_family_the_daemon_serves_is_in_readme(daemon: RunningDaemon) -> None:
    poll(lambda: daemon.request("/healthz"), lambda r: r.status == 200, "the first collection")
    text = daemon.request("/metrics/prometheus").text
    served = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    section = README[README.index("### Prometheus metrics"):README.index("## History across")]
    named = {n for code in re.findall(r"`([^`]+)`", section)
             for word in re.findall(r"crankshaft_[\w{},*]+", code) for n in expand(word)}
    wildcards = [n[:-1] for n in named if n.endswith("*")]
    missing = sorted(f for f in served if f.startswith("crankshaft_") and f not in named
                     and not any(f.startswith(w) for w in wildcards))
    assert not missing, f"README's metrics table does not name {missing}"


def test_every_json_series_is_in_readmes_sampled_table(daemon: RunningDaemon) -> None:
    doc = daemon.request("/metrics").json()
    keys = {k for k, v in doc.items() if isinstance(v, dict) and "samples" in v}
    section = README[README.index("### What is sampled"):README.index("### Alerts")]
    missing = sorted(k for k in keys if f"`{k}`" not in section)
    assert not missing, f"README's 'What is sampled' table does not name {missing}"


@pytest.mark.parametrize("line", [line for line in README.splitlines()
                                  if "http://localhost:9001" in line and "curl" in line])
def test_every_curl_against_localhost_is_in_a_tested_block(line: str) -> None:
    tested = "".join(blocks("api"))
    assert line in tested, "a curl command README shows outside a readme-test: api block"


def test_the_config_headers_claim_about_a_missing_file_holds(tmp_path: Path) -> None:
    header = (REPO / "config" / "exporter.yaml").read_text().split("\n\n")[0]
    assert "a --config naming a file that cannot be read is an error, exit 78" in header
    done = subprocess.run([sys.executable, "-m", "exporter", "run", "--listen", "127.0.0.1:0",
                           "--config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert "missing.yaml: cannot read" in done.stderr and "Traceback" not in done.stderr


def test_the_backfill_recipe_adds_every_label_the_shipped_scrape_config_gives() -> None:
    import yaml

    text = (REPO / "config" / "prometheus.yml").read_text()
    scrape = yaml.safe_load(text)["scrape_configs"]
    given = {"job", "instance"} | {name for job in scrape for static in job["static_configs"]
                                   for name in static.get("labels", {})}
    recipe = next(line for line in README.splitlines() if "/metrics/history?label=" in line)
    added = set(re.findall(r"label=(\w+)=", recipe))
    assert given <= added, (added, given)
    # Beyond those, only what the shipped file gives a car's target (its commented example).
    assert all(re.search(rf"^\s*#\s+{name}: ", text, re.M) for name in added - given), added
    job = re.search(r"label=job=([\w-]+)", recipe)
    assert job and job.group(1) in {j["job_name"] for j in scrape}
