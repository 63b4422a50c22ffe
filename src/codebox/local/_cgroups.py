"""The cgroups of one sandbox, where this process may create them (root, or a delegated
cgroup v2 subtree), v1 or v2: ``pids`` (its processes), ``memory`` (its processes and what
they keep in its tmpfs ``/tmp`` and ``/dev/shm``: tmpfs pages are charged to the cgroup of
the process that writes them) and ``cpu`` (its share of the CPU: each box is one group, so
however many processes it runs, it weighs as much as any other box). What cannot be made is
left to the rlimits and to `_watchdog`.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path("/sys/fs/cgroup")
CPU_WEIGHT = 100
"""A box's CPU weight (cgroup v2 ``cpu.weight``; v1 ``cpu.shares`` 1024, the same)."""


class Cgroups:
    """The cgroups of one sandbox, named ``name`` (made at once, where possible)."""

    def __init__(self, name: str, policy: Mapping[str, Any]) -> None:
        self.dirs: list[Path] = []
        self.held: set[str] = set()
        wanted = {"pids": policy["max_processes"], "memory": policy["memory_mb"],
                  "cpu": CPU_WEIGHT}
        for controller, limit in wanted.items():
            if limit is None:
                continue
            for base, files in _bases(controller):
                _sweep(base)
                target = base / name
                value = limit * 1024 * 1024 if controller == "memory" else limit
                try:
                    target.mkdir(exist_ok=True)
                    (target / files[0][0]).write_text(str(_scaled(files[0], value)))
                except OSError:
                    _rmdir(target)
                    continue
                for entry in files[1:]:
                    try:  # swap too, where the kernel accounts it
                        (target / entry[0]).write_text(str(_scaled(entry, value)))
                    except OSError:
                        pass
                self.dirs.append(target)
                self.held.add(controller)
                break

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in dict.fromkeys(self.dirs)]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs:
            try:
                found.update(int(p) for p in Path(procs).read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(found)

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the cgroups (a process that escaped its parent)."""
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except OSError:
                pass

    def remove(self, wait: float = 0.0) -> None:
        """Remove the cgroups; a cgroup whose killed processes are still exiting is waited
        for, up to ``wait`` seconds (else `_sweep` removes it later)."""
        end = time.monotonic() + wait
        while True:
            self.dirs = [d for d in self.dirs if not _rmdir(d)]
            if not self.dirs or time.monotonic() >= end:
                return
            self.kill_all()
            time.sleep(0.02)


def _scaled(entry: tuple[str, Any], value: int) -> Any:
    """The value to write in a cgroup file: a fixed one, or the limit in that file's unit."""
    _, how = entry
    if how == "same":
        return value
    if how == "shares":  # cgroup v1: 1024 is the weight 100 of v2
        return value * 1024 // 100
    return how


def _sweep(base: Path, age: float = 60.0) -> None:
    """Remove the empty cgroups of sandboxes whose gateway was killed before it could. A
    cgroup with a process in it cannot be removed; a young one may be about to get one."""
    try:
        stale = [d for d in base.glob("codebox-*") if time.time() - d.stat().st_mtime > age]
    except OSError:
        return
    for path in stale:
        _rmdir(path)


def _rmdir(path: Path) -> bool:
    """Remove a cgroup; whether it is gone."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


_V1_FILES: dict[str, tuple[tuple[str, Any], ...]] = {
    "pids": (("pids.max", "same"),),
    "memory": (("memory.limit_in_bytes", "same"), ("memory.memsw.limit_in_bytes", "same")),
    "cpu": (("cpu.shares", "shares"),),
}
_V2_FILES: dict[str, tuple[tuple[str, Any], ...]] = {
    "pids": (("pids.max", "same"),),
    "memory": (("memory.max", "same"), ("memory.swap.max", "0")),
    "cpu": (("cpu.weight", "same"),),
}


def _bases(controller: str) -> list[tuple[Path, tuple[tuple[str, Any], ...]]]:
    """Where a cgroup with ``controller`` can go (our own cgroup's directory), and the files
    that set its limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    bases = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            mount = ROOT / ("cpu,cpuacct" if controllers == "cpu,cpuacct" else controller)
            if not mount.is_dir():
                mount = ROOT / controller
            bases.append((mount / path.lstrip("/"), _V1_FILES[controller]))
        elif controllers == "" and (ROOT / "cgroup.controllers").exists():
            bases.append((ROOT / path.lstrip("/"), _V2_FILES[controller]))
    return bases


def remove_boxes(kernel_ids: list[str], wait: float = 2.0) -> None:
    """Remove what is left of the cgroups of these kernels (a gateway killed before it could
    remove them): whatever still runs in them is killed first."""
    left = Cgroups.__new__(Cgroups)
    left.held = set()
    left.dirs = [path for controller in ("pids", "memory", "cpu")
                 for base, _ in _bases(controller) for kernel in kernel_ids
                 for path in base.glob(f"codebox-{kernel}-*")]
    left.kill_all()
    left.remove(wait)
