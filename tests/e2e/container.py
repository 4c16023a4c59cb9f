"""A real systemd in a container, for the end-to-end tests.

The recipe (see the shared notes on real components): a Debian rootfs built by mmdebstrap,
booted with ``systemd-nspawn -b`` (no machine registration, private network), commands run
inside with ``nsenter -t PID1 -a``.  The rootfs tarball is cached between runs, keyed by what
goes into it, and extracted afresh for every run so each run starts from a pristine system.
The container has no network: Python wheels are built on the host (same Python minor
version as Debian's python3) and copied in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

SUITE = "bookworm"
VARIANT = "apt"
INCLUDE = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libsystemd0",
    "python3",
    "python3-venv",
    "make",
    "curl",
    "ca-certificates",
)
# Debian bookworm's python3; wheels built on the host must match its minor version.
CONTAINER_PYTHON = "3.11"
INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

T = TypeVar("T")


class ContainerError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "crankshaft-exporter-e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(doc: object) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def poll(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- inputs: the rootfs tarball and the wheelhouse ---------------------------------------------


def rootfs_tarball(log: Callable[[str], None] = print) -> Path:
    """The cached mmdebstrap tarball for SUITE/VARIANT/INCLUDE; built on first use."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    key = _key({"suite": SUITE, "variant": VARIANT, "include": sorted(INCLUDE), "arch": arch})
    tarball = cache_dir() / f"rootfs-{SUITE}-{arch}-{key}.tar"
    if tarball.exists():
        return tarball
    partial = tarball.with_name(f"{tarball.stem}.partial-{os.getpid()}.tar")
    log(f"building {tarball} with mmdebstrap (cached for later runs)")
    proc = subprocess.run(
        [
            "mmdebstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(INCLUDE)}",
            "--format=tar",
            SUITE,
            str(partial),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ContainerError(f"mmdebstrap failed ({proc.returncode}):\n{_tail(proc.stderr)}")
    os.replace(partial, tarball)
    return tarball


def project_requirements(repo: Path) -> list[str]:
    """What `make install` needs from an index: the build backend, the dependencies and the
    `systemd` extra (systemd-python, for journald fields)."""
    meta = tomllib.loads((repo / "pyproject.toml").read_text())
    reqs = list(meta["build-system"]["requires"])
    reqs += meta["project"].get("dependencies", [])
    reqs += meta["project"].get("optional-dependencies", {}).get("systemd", [])
    reqs.append("wheel")
    return sorted(set(reqs))


def wheelhouse(repo: Path, log: Callable[[str], None] = print) -> Path:
    """A folder of wheels for the container's Python, built by the host's pip; cached."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" != CONTAINER_PYTHON:
        raise ContainerError(
            f"host Python is {sys.version.split()[0]}; the container's is {CONTAINER_PYTHON}"
        )
    reqs = project_requirements(repo)
    key = _key({"reqs": reqs, "python": CONTAINER_PYTHON, "machine": platform.machine()})
    wheels = cache_dir() / f"wheels-{key}"
    if wheels.is_dir():
        return wheels
    partial = cache_dir() / f"wheels-{key}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    log(f"building wheelhouse {wheels}: {' '.join(reqs)}")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial), *reqs],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ContainerError(
            f"pip wheel failed ({proc.returncode}); systemd-python needs gcc, pkg-config and "
            f"libsystemd-dev:\n{_tail(proc.stderr)}"
        )
    os.replace(partial, wheels)
    return wheels


def repository_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the working tree that exist now."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(p for p in out.split("\0") if p and (repo / p).is_file())


def copy_files(repo: Path, files: Iterable[str], dest: Path) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)


# --- the container -------------------------------------------------------------------------------


class Container:
    """One booted systemd-nspawn container over a private copy of the rootfs."""

    def __init__(self, root: Path, log_path: Path, machine: str) -> None:
        self.root = root
        self.log_path = log_path
        self.machine = machine
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None

    # lifecycle

    @classmethod
    def extract(cls, tarball: Path, workdir: Path) -> Container:
        root = workdir / "rootfs"
        root.mkdir(parents=True)
        subprocess.run(
            ["tar", "--numeric-owner", "-xf", str(tarball), "-C", str(root)],
            check=True,
            capture_output=True,
        )
        machine = f"crankshaft-e2e-{os.getpid()}"
        return cls(root, workdir / "nspawn.log", machine)

    def host_path(self, path: str) -> Path:
        """The host path of an absolute path inside the container."""
        assert path.startswith("/"), path
        return self.root / path.lstrip("/")

    def boot(self, timeout: float = 90) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    f"--directory={self.root}",
                    f"--machine={self.machine}",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    "--console=pipe",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: its own process group, killable as one
            )
        self.pid1 = poll(self._find_pid1, timeout, "the container's PID 1 (systemd)")
        state = poll(self._system_running, timeout, "systemctl is-system-running")
        if state not in ("running", "degraded"):
            raise ContainerError(f"system state {state}")

    def _find_pid1(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {self.proc.returncode}:\n"
                f"{_tail(self.log_path.read_text(errors='replace'))}"
            )
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            return None
        for pid in pids:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "systemd":
                return pid
        return None

    def _system_running(self) -> str | None:
        r = self.run("systemctl", "is-system-running", check=False, timeout=10)
        state = r.stdout.strip()
        return state if state in ("running", "degraded", "maintenance", "stopping") else None

    def poweroff(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid1 is not None:
            self.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started, by its id
            self.proc.wait(10)

    def remove(self) -> None:
        """Delete the rootfs copy (only when nothing is mounted below it) and the empty
        folders systemd-nspawn leaves under /run/systemd/nspawn."""
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        root = str(self.root.resolve())
        if any(line.split()[4].startswith(root) for line in mounts):
            raise ContainerError(f"something is still mounted under {root}; not deleting it")
        shutil.rmtree(self.root, ignore_errors=True)
        nspawn = Path("/run/systemd/nspawn")
        for leftover in (
            nspawn / "propagate" / self.machine,
            nspawn / "propagate",
            nspawn / "locks",
            nspawn,
        ):
            with contextlib.suppress(OSError):
                leftover.rmdir()  # only when empty: another container may be using it

    # running commands inside

    def run(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container, with a clean environment."""
        assert self.pid1 is not None, "not booted"
        inner_env = {"PATH": INNER_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        cmd = [
            "nsenter",
            "-t",
            str(self.pid1),
            "-a",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in inner_env.items()),
            *argv,
        ]
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited with {r.returncode}\n"
                f"stdout:\n{_tail(r.stdout)}\nstderr:\n{_tail(r.stderr)}"
            )
        return r

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    # systemd helpers

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        result = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                result[key] = value
        return result

    def wait_active(self, unit: str, props: tuple[str, ...], timeout: float) -> dict[str, str]:
        """``props`` of ``unit`` (ActiveState and SubState among them) once it is active
        (running); an AssertionError with its journal's tail if it failed meanwhile."""
        def probe() -> dict[str, str] | None:
            s = self.show(unit, *props)
            if s["ActiveState"] == "failed":
                log = self.run("journalctl", "-u", unit, "--no-pager", "-n", "40",
                               check=False).stdout
                raise AssertionError(f"{unit} failed: {s}\n{log}")
            return s if s["ActiveState"] == "active" and s["SubState"] == "running" else None

        return poll(probe, timeout, f"{unit} to be active (running)")

    def journal(self, unit: str) -> list[dict[str, str]]:
        out = self.run("journalctl", "-u", unit, "-o", "json", "--no-pager").stdout
        entries = []
        for line in out.splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            entry = {}
            for key, value in raw.items():
                if isinstance(value, list):  # binary or repeated field
                    if value and all(isinstance(b, int) for b in value):
                        value = bytes(value).decode(errors="replace")
                    else:
                        value = value[-1]
                entry[key] = "" if value is None else str(value)
            entries.append(entry)
        return entries

    def http(
        self,
        path: str,
        method: str = "GET",
        body: str | None = None,
        headers: dict[str, str] | None = None,
        port: int = 9001,
    ) -> tuple[int, dict[str, str], str]:
        """An HTTP request from inside the container (its network is private) with curl."""
        argv = ["curl", "-sS", "-i", "--max-time", "10", "-X", method]
        for k, v in (headers or {}).items():
            argv += ["-H", f"{k}: {v}"]
        if body is not None:
            argv += ["--data-binary", body]
        argv.append(f"http://127.0.0.1:{port}{path}")
        out = self.run(*argv).stdout  # text mode: CRLF arrives as LF
        head, _, payload = out.partition("\n\n")
        lines = head.splitlines()
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs, payload
