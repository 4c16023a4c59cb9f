"""Which processes make up the watched target: itself, a pid, a pidfile, a name, a regex, a unit.

A finder is asked again on every tick, so a target that exits and comes back under a new
PID is found on the next tick without configuration changes.  Finders only list PIDs; the
sampler reads them.  Discovery goes through psutil, the portable path: process names are
compared in full (psutil completes the kernel's 15-byte ``comm`` from the command line),
and nothing here assumes Linux except the systemd unit finder, which reads the cgroup tree
and says once in the log where there is none.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
TARGET_KINDS = ("self", "pid", "pidfile", "name", "cmdline", "systemd_unit", "none")


@dataclass(frozen=True, slots=True)
class TargetMiss:
    """Why the target was not found, for the log, /healthz and the page: what was looked
    for, how many processes were there to look at, and the nearest names (a typo in
    ``--target name:...`` is the usual cause, as an unknown key is in a config file)."""

    looked_for: str
    processes_seen: int
    detail: str
    nearest: tuple[str, ...] = field(default=())

    def text(self) -> str:
        hint = f"; nearest names: {', '.join(self.nearest)}" if self.nearest else ""
        return (f"target {self.looked_for} not found: {self.detail} "
                f"({self.processes_seen} processes seen){hint}")

    def as_json(self) -> dict[str, object]:
        return {"looked_for": self.looked_for, "processes_seen": self.processes_seen,
                "detail": self.detail, "nearest": list(self.nearest), "message": self.text()}


def nearest_names(wanted: str, names: Iterable[str], n: int = 3) -> tuple[str, ...]:
    """The closest few distinct names (difflib, as check-config suggests config keys)."""
    return tuple(difflib.get_close_matches(wanted, sorted(set(names)), n=n, cutoff=0.6))


def _process_names() -> list[str]:
    """The names of every live process but this one (psutil completes truncated names)."""
    me = os.getpid()
    names = []
    for proc in psutil.process_iter(["name"]):
        if proc.pid != me and proc.info.get("name"):
            names.append(proc.info["name"])
    return names


def _count_processes() -> int:
    try:
        return len(psutil.pids())
    except (psutil.Error, OSError):
        return 0


class ProcessFinder(ABC):
    """Lists the PIDs of the target now; an empty list means the target is not running."""

    @abstractmethod
    def find(self) -> list[int]: ...

    @abstractmethod
    def describe(self) -> str:
        """Human-readable target, for logs and the target_info metric."""

    def explain(self) -> TargetMiss:
        """Why ``find`` came back empty (asked only then: it may scan the process table)."""
        return TargetMiss(self.describe(), _count_processes(), "no matching process is running")


class SelfFinder(ProcessFinder):
    """The seed's default: the process running the monitor (/proc/self)."""

    def find(self) -> list[int]:
        return [os.getpid()]

    def describe(self) -> str:
        return "self"


def _alive(pid: int) -> bool:
    """Whether a process with this PID exists (zombies do not count: they use nothing)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


class PidFinder(ProcessFinder):
    def __init__(self, pid: int) -> None:
        if pid < 1:
            raise ValueError(f"pid must be a positive integer, got {pid}")
        self.pid = pid

    def find(self) -> list[int]:
        return [self.pid] if _alive(self.pid) else []

    def describe(self) -> str:
        return f"pid {self.pid}"

    def explain(self) -> TargetMiss:
        return TargetMiss(self.describe(), _count_processes(),
                          f"no running process has pid {self.pid}")


class PidfileFinder(ProcessFinder):
    """Re-reads the pidfile every tick, so a restarted daemon's new PID is picked up."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def find(self) -> list[int]:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return []
        first = text.split(maxsplit=1)[0] if text else ""
        if not first.isdigit() or int(first) < 1:
            return []
        pid = int(first)
        return [pid] if _alive(pid) else []

    def describe(self) -> str:
        return f"pidfile {self.path}"

    def explain(self) -> TargetMiss:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError as e:
            detail = f"cannot read {self.path}: {e.strerror or e}"
        else:
            first = text.split(maxsplit=1)[0] if text else ""
            if not first.isdigit() or int(first) < 1:
                detail = f"{self.path} holds no pid (it starts with {first[:20]!r})"
            else:
                detail = f"pid {int(first)} from {self.path} is not running"
        return TargetMiss(self.describe(), _count_processes(), detail)


def _other_pids_where(attr: str, matches: Callable[[object], bool]) -> list[int]:
    """PIDs of other live processes whose psutil attribute ``attr`` satisfies ``matches``
    (the exporter never matches itself, whatever its own command line says; a zombie keeps
    its name but uses nothing, so it is no running target)."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter([attr, "status"]):
        value = proc.info.get(attr)
        if proc.pid == me or value is None or proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if matches(value):
            found.append(proc.pid)
    return sorted(found)


class NameFinder(ProcessFinder):
    """Processes whose full name (psutil's ``name()``: ``comm``, completed from the command
    line where the kernel truncated it to 15 bytes) equals ``name``."""

    def __init__(self, name: str) -> None:
        if not name:
            raise ValueError("process name must not be empty")
        self.name = name

    def find(self) -> list[int]:
        return _other_pids_where("name", lambda name: name == self.name)

    def describe(self) -> str:
        return f"name {self.name}"

    def explain(self) -> TargetMiss:
        names = _process_names()
        return TargetMiss(self.describe(), len(names), f"no running process is named "
                          f"{self.name!r}", nearest_names(self.name, names))


class CmdlineFinder(ProcessFinder):
    """Processes whose full command line (arguments joined by spaces) matches a regex."""

    def __init__(self, pattern: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid command-line regex {pattern!r}: {e}") from None

    def find(self) -> list[int]:
        return _other_pids_where("cmdline", self._matches)

    def _matches(self, argv: object) -> bool:
        if not isinstance(argv, list) or not argv:  # kernel threads and zombies: none
            return False
        return self.regex.search(" ".join(argv)) is not None

    def describe(self) -> str:
        return f"cmdline /{self.regex.pattern}/"

    def explain(self) -> TargetMiss:
        return TargetMiss(self.describe(), _count_processes(),
                          "no running process's command line matches the regex")


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # the process exited while we looked, or is not ours to read
        return None


class SystemdUnitFinder(ProcessFinder):
    """Every process in a systemd unit's cgroup (and its sub-cgroups), as systemd counts them.

    Works on the unified (v2) hierarchy and on v1's name=systemd hierarchy.  The unit's
    cgroup directory is located once and remembered; if it disappears (unit stopped) it is
    looked for again on the next tick.
    """

    def __init__(self, unit: str, cgroup_root: str | os.PathLike[str] = CGROUP_ROOT) -> None:
        if not unit or "/" in unit:
            raise ValueError(f"invalid systemd unit name {unit!r}")
        self.unit = unit if "." in unit else f"{unit}.service"
        self.root = Path(cgroup_root)
        self._dir: Path | None = None
        self._said_no_cgroups = False

    def _locate(self) -> Path | None:
        for hierarchy in (self.root, self.root / "systemd", self.root / "unified"):
            for slice_ in ("system.slice", "user.slice", ""):
                candidate = hierarchy / slice_ / self.unit
                if (candidate / "cgroup.procs").exists():
                    return candidate
        for dirpath, dirnames, _ in os.walk(self.root):  # nested slices, e.g. app.slice
            if self.unit in dirnames:
                return Path(dirpath) / self.unit
            if dirpath.count(os.sep) - str(self.root).count(os.sep) >= 4:
                dirnames.clear()
        return None

    def find(self) -> list[int]:
        if not self.root.is_dir():
            if not self._said_no_cgroups:
                log.warning(
                    "%s: no cgroup tree at %s (systemd units need Linux cgroups); "
                    "the target counts as down",
                    self.unit,
                    self.root,
                )
                self._said_no_cgroups = True
            return []
        if self._dir is None or not self._dir.exists():
            self._dir = self._locate()
            if self._dir is None:
                return []
        pids: set[int] = set()
        for dirpath, _, filenames in os.walk(self._dir):
            if "cgroup.procs" in filenames:
                raw = _read_bytes(os.path.join(dirpath, "cgroup.procs")) or b""
                pids.update(int(x) for x in raw.split() if x.isdigit())
        return sorted(pids)

    def describe(self) -> str:
        return f"systemd unit {self.unit}"

    def explain(self) -> TargetMiss:
        if not self.root.is_dir():
            detail = f"no cgroup tree at {self.root} (systemd units need Linux cgroups)"
            return TargetMiss(self.describe(), _count_processes(), detail)
        if self._dir is None or not self._dir.exists():
            units = self._unit_names()
            return TargetMiss(self.describe(), _count_processes(),
                              f"no cgroup named {self.unit} under {self.root} (the unit is not "
                              "running, or has another name)", nearest_names(self.unit, units))
        return TargetMiss(self.describe(), _count_processes(),
                          f"the unit's cgroup {self._dir} holds no process (stopped?)")

    def _unit_names(self) -> list[str]:
        names: list[str] = []
        for dirpath, dirnames, _ in os.walk(self.root):
            names += [d for d in dirnames if d.endswith((".service", ".scope"))]
            if dirpath.count(os.sep) - str(self.root).count(os.sep) >= 3:
                dirnames.clear()
        return names


class SharedFinder(ProcessFinder):
    """One finder for every source of a tick: the sources read back to back, so a listing
    younger than ``max_age`` seconds is reused instead of scanning the process table again."""

    def __init__(self, finder: ProcessFinder, max_age: float = 0.005) -> None:
        self.finder = finder
        self.max_age = max_age
        self._found: tuple[float, list[int]] | None = None

    def find(self) -> list[int]:
        now = time.monotonic()
        found = self._found
        if found is None or now - found[0] > self.max_age:
            found = self._found = (now, self.finder.find())
        return list(found[1])

    def describe(self) -> str:
        return self.finder.describe()

    def explain(self) -> TargetMiss:
        return self.finder.explain()


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """The configured target: ``kind`` from TARGET_KINDS and its argument."""

    kind: str = "self"
    value: str | int | None = None

    def finder(self) -> ProcessFinder | None:
        """Build the finder; None for kind ``none`` (values only pushed, nothing sampled)."""
        kind, value = self.kind, self.value
        if kind == "self":
            return SelfFinder()
        if kind == "none":
            return None
        if value is None or value == "":
            raise ValueError(f"target kind {kind!r} needs a value")
        if kind == "pid":
            if isinstance(value, bool) or not (isinstance(value, int) or str(value).isdigit()):
                raise ValueError(f"target pid must be a positive integer, got {value!r}")
            return PidFinder(int(value))
        if kind == "pidfile":
            return PidfileFinder(str(value))
        if kind == "name":
            return NameFinder(str(value))
        if kind == "cmdline":
            return CmdlineFinder(str(value))
        if kind == "systemd_unit":
            return SystemdUnitFinder(str(value))
        raise ValueError(f"unknown target kind {kind!r}; one of {', '.join(TARGET_KINDS)}")
