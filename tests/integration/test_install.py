"""`make install` staged with DESTDIR into a temporary tree: PREFIX, SYSCONFDIR, UNITDIR and
BINDIR honoured (the program linked onto PATH), no staging path left inside the virtualenv,
an existing config kept; `make uninstall` removes the program, the unit and the link, and
keeps the config.  (The real install into a systemd machine is tests/e2e.)"""

from __future__ import annotations

import subprocess

from tests.conftest import REPO


def test_make_install_honours_destdir_prefix_and_keeps_the_config(tmp_path) -> None:
    stage = tmp_path / "stage"
    prefix, sysconf, unitdir = "/opt/ce-test", "/etc/ce-test", "/usr/lib/systemd/system"
    bindir = "/usr/local/bin"
    (stage / sysconf.lstrip("/")).mkdir(parents=True)
    existing = stage / sysconf.lstrip("/") / "exporter.yaml"
    existing.write_text("interval: 5s  # the user's own\n")
    result = subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={stage}", f"PREFIX={prefix}",
         f"SYSCONFDIR={sysconf}", f"UNITDIR={unitdir}", f"BINDIR={bindir}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "keeping existing" in result.stdout
    assert existing.read_text() == "interval: 5s  # the user's own\n"

    venv = stage / prefix.lstrip("/")
    script = venv / "bin" / "crankshaft-exporter"
    assert script.read_text().splitlines()[0] == f"#!{prefix}/bin/python3"
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert str(stage) not in path.read_text(errors="replace"), path

    unit = (stage / unitdir.lstrip("/") / "crankshaft-exporter.service").read_text()
    assert f"ExecStart={prefix}/bin/crankshaft-exporter run --config {sysconf}/exporter.yaml" \
        in unit
    assert "/opt/crankshaft-exporter" not in unit and "/etc/crankshaft-exporter" not in unit
    assert f"Documentation=file://{prefix}/README.md" in unit
    assert (venv / "README.md").is_file()

    # on PATH: a link in BINDIR to the program at its final (unstaged) path
    link = stage / bindir.lstrip("/") / "crankshaft-exporter"
    assert link.is_symlink() and str(link.readlink()) == f"{prefix}/bin/crankshaft-exporter"
    # a foreign program already in BINDIR is left alone by uninstall
    other = stage / bindir.lstrip("/") / "other-tool"
    other.write_text("#!/bin/sh\n")

    result = subprocess.run(
        ["make", "-C", str(REPO), "uninstall", f"DESTDIR={stage}", f"PREFIX={prefix}",
         f"SYSCONFDIR={sysconf}", f"UNITDIR={unitdir}", f"BINDIR={bindir}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not link.is_symlink() and not link.exists()
    assert not venv.exists()
    assert not (stage / unitdir.lstrip("/") / "crankshaft-exporter.service").exists()
    assert existing.read_text() == "interval: 5s  # the user's own\n"
    assert other.exists()
