"""The Debian package in a clean Debian 12, as a user installs it: `make deb`, then
`apt-get install ./crankshaft-exporter_…_all.deb` with Debian's own libraries.

amd64: a booted bookworm (systemd as PID 1, see tests/e2e/container.py): the service enabled
and running by the package alone, /metrics in text, OpenMetrics and JSON, `systemctl
reload`, the history across `systemctl restart`, an upgrade to a later version keeping the
edited configuration and the history, `apt-get remove` keeping the state and the
configuration, `apt-get purge` removing both.  arm64: the same install in an arm64 bookworm
under qemu-user emulation, and a scrape with Prometheus' Accept header.  The tests of each
architecture share one container and run in file order.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import exporter
from tests.conftest import REPO, require, require_tool
from tests.e2e.container import Container, ContainerError, poll
from tests.e2e.debian_package import (
    build_deb,
    package_relations,
    package_rootfs,
    register_arm64_emulation,
)

pytestmark = pytest.mark.real

UNIT = "crankshaft-exporter.service"
CONFIG = "/etc/crankshaft-exporter/exporter.yaml"
STATE = "/var/lib/private/crankshaft-exporter"  # DynamicUser's StateDirectory
CONTROL = REPO / "systemd" / "debian" / "control"
# What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# A later release to upgrade to: sorts after the current version (make deb VERSION=...).
UPGRADE_VERSION = f"{exporter.__version__}+upgrade.test"
OBSERVED: dict[str, object] = {}


def prepare(arch: str) -> tuple[Path, Path]:
    """The package and the cached root file system tarball for ``arch``."""
    require(shutil.which("dpkg-buildpackage") is not None, "dpkg-buildpackage is missing")
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter", "lintian"):
        require_tool(tool)
    started = time.monotonic()
    try:
        deb = build_deb(REPO)  # once per run
        OBSERVED.setdefault("make deb seconds", round(time.monotonic() - started, 1))
        tarball = package_rootfs(arch, package_relations(CONTROL))
    except ContainerError as e:
        require(False, f"cannot prepare the {arch} container: {e}")
    OBSERVED[f"{arch} prepare seconds"] = round(time.monotonic() - started, 1)
    return deb, tarball


def test_lintian_is_clean() -> None:
    deb, _ = prepare("amd64")
    r = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb)],
                                     capture_output=True, text=True, timeout=300)
    problems = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


# --- amd64, booted -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted bookworm where the package was installed with apt-get (nothing else)."""
    deb, tarball = prepare("amd64")
    c = Container.extract(tarball, tmp_path_factory.mktemp("deb-amd64"))
    try:
        shutil.copy(deb, c.host_path(f"/root/{deb.name}"))
        c.boot()
        started = time.monotonic()
        r = c.run("apt-get", "install", "--yes", f"/root/{deb.name}", env=APT_ENV, timeout=300)
        OBSERVED["apt-get install seconds"] = round(time.monotonic() - started, 1)
        OBSERVED["apt-get install"] = [line for line in r.stdout.splitlines()
                                       if line.startswith("Setting up")]
        yield c
    finally:
        try:
            c.poweroff()
        finally:
            c.remove()
            print("\n[debian package] observed:", json.dumps(OBSERVED, indent=1))


UNIT_PROPS = ("ActiveState", "SubState", "MainPID", "UnitFileState", "StatusText")


def state(c: Container) -> dict[str, str]:
    return c.show(UNIT, *UNIT_PROPS)


def wait_active(c: Container) -> dict[str, str]:
    return c.wait_active(UNIT, UNIT_PROPS, 60)


def scrape(c: Container, accept: str | None = None, path: str = "/metrics") -> tuple[str, str]:
    status, headers, body = c.http(path, headers={"Accept": accept} if accept else None)
    assert status == 200, (status, body[:500])
    return headers["content-type"], body


def installed_version(c: Container, package: str) -> str:
    return c.run("dpkg-query", "-W", "-f=${Version}", package).stdout


def test_apt_installs_it_with_debians_libraries(box: Container) -> None:
    setup = "\n".join(OBSERVED["apt-get install"])  # type: ignore[arg-type]
    for package in package_relations(CONTROL):
        assert f"Setting up {package} " in setup, setup
    assert installed_version(box, "python3-prometheus-client").startswith("0.16.0")
    OBSERVED["prometheus_client"] = installed_version(box, "python3-prometheus-client")
    assert box.host_path("/usr/bin/crankshaft-exporter").is_file()
    assert box.host_path("/usr/share/man/man1/crankshaft-exporter.1.gz").is_file()
    assert box.host_path("/usr/share/doc/crankshaft-exporter/README.md").is_file()
    shared = box.host_path("/usr/share/crankshaft-exporter")
    for name in ("prometheus.yml", "alertmanager.yml", "crankshaft-exporter.rules.yml",
                 "crankshaft-exporter.generated.rules.yml",
                 "grafana/crankshaft-exporter.json"):
        assert (shared / name).is_file(), name
    conffiles = box.run("dpkg-query", "-W", "-f=${Conffiles}", "crankshaft-exporter").stdout
    assert CONFIG in conffiles
    # --man=no: a minimal system has no man-db to resolve Documentation=man:… with.
    box.run("systemd-analyze", "verify", "--recursive-errors=yes", "--man=no", UNIT)
    man = box.run("man", "-P", "cat", "crankshaft-exporter", check=False)
    if man.returncode == 0:  # man-db is not in a minimal system; the file is checked above
        assert "alert-rules" in man.stdout


def test_the_service_is_enabled_and_running_after_install(box: Container) -> None:
    s = wait_active(box)
    assert s["UnitFileState"] == "enabled", s
    unit = box.run("systemctl", "cat", UNIT).stdout
    assert "ExecStart=/usr/bin/crankshaft-exporter run --config " + CONFIG in unit
    assert "DynamicUser=yes" in unit and "StateDirectory=crankshaft-exporter" in unit
    assert "/opt/" not in unit


def test_metrics_in_text_openmetrics_and_json(box: Container) -> None:
    wait_active(box)
    ctype, text = scrape(box, "text/plain;version=0.0.4")
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    assert "# TYPE crankshaft_target_up gauge" in text
    ctype, om = scrape(box, PROMETHEUS_ACCEPT)
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert om.endswith("# EOF\n")
    ctype, body = scrape(box)
    assert ctype.startswith("application/json"), ctype
    assert "memory" in json.loads(body)


def test_systemctl_reload_applies_the_edited_config(box: Container) -> None:
    before = wait_active(box)
    text = box.host_path(CONFIG).read_text()
    assert re.search(r"^interval: 1m$", text, re.M), "the shipped default changed?"
    box.write(CONFIG, re.sub(r"^interval: 1m$", "interval: 1s", text, flags=re.M))
    box.run("systemctl", "reload", UNIT, timeout=60)
    def reloaded() -> dict[str, str] | None:
        s = state(box)
        return s if "every 1000 ms" in s["StatusText"] else None

    after = poll(reloaded, 30, "the reloaded interval in the service status")
    assert after["MainPID"] == before["MainPID"], "a reload must not restart the daemon"
    _, text = scrape(box, "text/plain;version=0.0.4")
    assert "crankshaft_config_last_reload_successful 1.0" in text


def memory_samples(c: Container) -> list[tuple[float, float]]:
    _, body = scrape(c)
    return [(s["timestamp"], s["value"]) for s in json.loads(body)["memory"]["samples"]]


def test_restart_keeps_the_history(box: Container) -> None:
    before = wait_active(box)
    def three_samples() -> list[tuple[float, float]] | None:
        got = memory_samples(box)
        return got if len(got) >= 3 else None

    seen = poll(three_samples, 60, "three memory samples")
    box.run("systemctl", "restart", UNIT, timeout=60)
    after = wait_active(box)
    assert after["MainPID"] != before["MainPID"]
    assert box.host_path(f"{STATE}/history.bin").is_file()
    assert memory_samples(box)[: len(seen)] == seen, "the restart lost samples"


def test_an_upgrade_keeps_the_edited_config_and_the_history(box: Container) -> None:
    """`apt install ./…NEW…deb` over the installed one: the edited conffile stays (the
    shipped one did not change, so dpkg does not ask), the service is restarted on the new
    files and brings its history back."""
    before = wait_active(box)
    seen = memory_samples(box)
    assert len(seen) >= 3
    edited = box.host_path(CONFIG).read_text()
    assert re.search(r"^interval: 1s", edited, re.M), "the reload test edits the config first"
    try:
        new = build_deb(REPO, UPGRADE_VERSION)
    except ContainerError as e:
        raise AssertionError(str(e)) from None
    shutil.copy(new, box.host_path(f"/root/{new.name}"))
    new.unlink()  # dist/ keeps only the real package
    box.run("apt-get", "install", "--yes", f"/root/{new.name}", env=APT_ENV, timeout=300)
    assert installed_version(box, "crankshaft-exporter") == UPGRADE_VERSION
    after = wait_active(box)
    assert after["MainPID"] != before["MainPID"], "the upgrade must restart the service"
    assert box.host_path(CONFIG).read_text() == edited, "the upgrade replaced the config"
    assert memory_samples(box)[: len(seen)] == seen, "the upgrade lost samples"


def test_remove_keeps_state_and_config_purge_removes_them(box: Container) -> None:
    wait_active(box)
    box.run("apt-get", "remove", "--yes", "crankshaft-exporter", env=APT_ENV, timeout=120)
    assert box.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
    assert not box.host_path("/usr/bin/crankshaft-exporter").exists()
    assert box.host_path(f"{STATE}/history.bin").is_file(), "remove must keep the history"
    assert box.host_path(CONFIG).is_file(), "remove must keep the configuration"
    box.run("apt-get", "purge", "--yes", "crankshaft-exporter", env=APT_ENV, timeout=120)
    for gone in (STATE, "/var/lib/crankshaft-exporter", "/etc/crankshaft-exporter"):
        assert not box.host_path(gone).exists() and not box.host_path(gone).is_symlink(), gone
    left = box.run("dpkg-query", "-W", "-f=${Status}", "crankshaft-exporter", check=False)
    assert "installed" not in left.stdout.replace("not-installed", ""), left.stdout


# --- arm64, emulated -----------------------------------------------------------------------------

ARM64_SCRIPT = """\
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get install --yes /root/{deb} >/root/apt.log 2>&1 || {{ cat /root/apt.log; exit 1; }}
echo "arch $(dpkg --print-architecture)"
echo "prometheus_client $(dpkg-query -W -f='${{Version}}' python3-prometheus-client)"
printf 'interval: 1s\\nconnections:\\n  port: 9001\\n' > /root/exporter.yaml
crankshaft-exporter run --config /root/exporter.yaml --listen 127.0.0.1:9001 \\
  >/root/exporter.log 2>&1 &
pid=$!
curl -sS --retry-connrefused --retry 600 --retry-delay 1 --max-time 20 -o /root/body \\
  -w 'scrape %{{http_code}} %{{content_type}}\\n' -H 'Accept: {accept}' \\
  http://127.0.0.1:9001/metrics
# three more ticks: the connections source has asked netlink and fallen back by then
n=0; until [ "$(grep -c '^crankshaft_collections_total' /root/body)" -gt 0 ] && \\
  [ "$(sed -n 's/^crankshaft_collections_total \\([0-9]*\\).*/\\1/p' /root/body)" -ge 3 ]; do
  n=$((n+1)); [ $n -lt 120 ] || break
  curl -sS -o /root/body -H 'Accept: {accept}' http://127.0.0.1:9001/metrics; sleep 1
done
kill -TERM $pid; wait $pid || true
echo "--- body"; cat /root/body
echo "--- log"; cat /root/exporter.log
"""


def test_arm64_installs_and_answers_prometheus(tmp_path: Path) -> None:
    require(shutil.which("qemu-aarch64-static") is not None, "qemu-user-static is missing")
    try:
        register_arm64_emulation()
    except (OSError, subprocess.CalledProcessError) as e:
        require(False, f"cannot register the arm64 binfmt handler: {e}")
    deb, tarball = prepare("arm64")
    c = Container.extract(tarball, tmp_path)
    try:
        shutil.copy(deb, c.host_path(f"/root/{deb.name}"))
        c.write("/root/check.sh", ARM64_SCRIPT.format(deb=deb.name, accept=PROMETHEUS_ACCEPT))
        started = time.monotonic()
        r = subprocess.run(
            ["systemd-nspawn", f"--directory={c.root}", f"--machine={c.machine}",
             "--register=no", "--keep-unit", "--private-network", "--console=pipe",
             "--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin", "sh", "/root/check.sh"],
            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
        )
        OBSERVED["arm64 install and scrape seconds"] = round(time.monotonic() - started, 1)
        out = r.stdout
        assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
        assert "arch arm64" in out
        assert "prometheus_client 0.16.0" in out, out[:500]
        scrape_line = re.search(r"^scrape (\d+) (.*)$", out, re.M)
        assert scrape_line and scrape_line.group(1) == "200", out[-3000:]
        assert scrape_line.group(2).startswith("application/openmetrics-text")
        body, _, log = out.partition("--- body\n")[2].partition("--- log\n")
        assert body.endswith("# EOF\n") and "crankshaft_target_up" in body
        # netlink is not emulated: one line says so, and connections come from /proc
        netlink = [line for line in log.splitlines() if "sock_diag netlink" in line]
        assert len(netlink) == 1, log
        assert "Traceback" not in log, log
        OBSERVED["arm64 netlink line"] = netlink[0]
    finally:
        c.remove()
        print("\n[debian package, arm64] observed:", json.dumps(OBSERVED, indent=1))
