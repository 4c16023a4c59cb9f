"""The Debian package in a clean Debian 12: its build, and cached root file systems that
install it with `apt-get install ./…deb` from Debian's own archive, on amd64 and (under
qemu-user emulation) arm64.

The containers run without a network (their services must not be reachable from outside),
so the archive's part is done while the root file system is built: mmdebstrap keeps the
package lists and has apt download the package's dependencies (Depends and Recommends of
systemd/debian/control) into apt's cache.  Inside, `apt-get install ./…deb` then resolves
them against the archive's lists and installs them from that cache, exactly as on a Pi
with a network.  The tarballs are cached (keyed by architecture and the dependency list),
so a warm run costs an extraction.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.e2e.container import SUITE, ContainerError, _key, _tail, cache_dir

BASE = ("systemd", "systemd-sysv", "dbus", "curl", "ca-certificates")
BINFMT_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def package_relations(control: Path) -> list[str]:
    """The binary package's Depends and Recommends that name Debian packages."""
    binary = control.read_text().split("\nPackage:", 1)[1]
    names: list[str] = []
    for field in ("Depends", "Recommends"):
        match = re.search(rf"^{field}:(.*?)(?=^\S)", binary + "\nEnd:", re.M | re.S)
        if match:
            names += re.findall(r"(?:^|,)\s*([a-z0-9][a-z0-9.+-]+)", match.group(1))
    return sorted(n for n in set(names) if not n.startswith("$"))


@functools.cache
def build_deb(repo: Path, version: str | None = None) -> Path:
    """`make deb` (once per test run and version); the path of the package it built.  A
    given ``version`` stands in for a later release, to upgrade to."""
    argv = ["make", "-C", str(repo), "deb", *([f"VERSION={version}"] if version else [])]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise ContainerError(f"make deb failed ({r.returncode}):\n{_tail(r.stdout + r.stderr)}")
    (deb,) = re.findall(r"^built (\S+\.deb)$", r.stdout, re.M)
    return repo / deb


def register_arm64_emulation() -> None:
    """qemu-user-static's binfmt handler for arm64.  Its postinst does not register it
    inside a container, so mount binfmt_misc if needed and register with systemd-binfmt."""
    if (BINFMT_DIR / "qemu-aarch64").exists():
        return
    if not (BINFMT_DIR / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                       check=True, capture_output=True)
    subprocess.run(["/usr/lib/systemd/systemd-binfmt", BINFMT_CONF], check=True,
                   capture_output=True)


def package_rootfs(arch: str, dependencies: list[str],
                   log: Callable[[str], None] = print) -> Path:
    """A bookworm tarball for ``arch`` with apt's lists and the dependencies' packages in
    apt's cache (not installed); built on first use, then cached."""
    key = _key({"suite": SUITE, "base": BASE, "deps": dependencies, "arch": arch, "v": 2})
    tarball = cache_dir() / f"rootfs-deb-{SUITE}-{arch}-{key}.tar"
    if tarball.exists():
        return tarball
    partial = tarball.with_name(f"{tarball.stem}.partial-{os.getpid()}.tar")
    log(f"building {tarball} with mmdebstrap (cached for later runs)")
    # mmdebstrap's own apt settings reach the hook and leave Recommends out; the container's
    # apt installs them (python3-systemd is one, and so are some of the libraries' own).
    download = ("chroot \"$1\" apt-get install --download-only --yes "
                "-o APT::Install-Recommends=true " + " ".join(dependencies))
    proc = subprocess.run(
        ["mmdebstrap", "--variant=apt", f"--arch={arch}", f"--include={','.join(BASE)}",
         "--skip=cleanup/apt", "--customize-hook=chroot \"$1\" apt-get clean",
         f"--customize-hook={download}", "--format=tar", SUITE, str(partial)],
        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ContainerError(f"mmdebstrap failed ({proc.returncode}):\n{_tail(proc.stderr)}")
    os.replace(partial, tarball)
    return tarball
