"""A box's memory, counted from the outside, where no memory cgroup can hold it (codebox
not running as root, and no cgroup delegated to it): ``RLIMIT_AS`` bounds each process of the
box, not the box; this sums them.

Every `INTERVAL` seconds (every `NEAR_INTERVAL` once the box holds half its limit) it adds
up the private resident memory of every process of the sandbox (found from its first process
through ``/proc/<pid>/task/*/children``) and what the box keeps in its ``/tmp`` and
``/dev/shm`` (tmpfs: memory, which no process's RSS shows), and kills the whole sandbox when
the sum passes the box's ``memory_mb``: the kernel dies (the box says so; its next run gets
a fresh kernel). It counts on a thread of its own, not on the gateway's event loop, which
every box's messages keep busy. What it cannot stop is a box that grows past its limit
within one interval, or within the time a loaded machine makes the count wait for a core:
the box is killed then, not stopped at the limit.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

INTERVAL = 0.1
NEAR_INTERVAL = 0.02  # the last stretch is where a fast writer overshoots
_PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                continue
    return found


def private_bytes(pid: int) -> int:
    """Resident memory of ``pid`` that is its own (resident minus shared pages)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            fields = f.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def tmpfs_bytes(pid: int) -> int:
    """What the box of ``pid`` holds in its ``/tmp`` and ``/dev/shm``."""
    total = 0
    for path in ("tmp", "dev/shm"):
        try:
            st = os.statvfs(f"/proc/{pid}/root/{path}")
        except OSError:
            continue
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def usage(root: int) -> int:
    """The memory of the sandbox whose first process is ``root``, in bytes."""
    pids = descendants(root)
    held = tmpfs_bytes(pids[1]) if len(pids) > 1 else 0  # inside: the sandbox's root
    return held + sum(private_bytes(pid) for pid in pids)


class Watch:
    """Kill the sandbox of ``root`` once it holds more than ``limit`` bytes; ends when the
    sandbox is gone or `stop` is called."""

    def __init__(self, root: int, limit: int, name: str, log: Any) -> None:
        self._root, self._limit, self._name, self._log = root, limit, name, log
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._count, name=f"codebox-watch-{name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _count(self) -> None:
        wait = INTERVAL
        while not self._stopped.wait(wait):
            if not os.path.exists(f"/proc/{self._root}"):
                return
            used = usage(self._root)
            if used > self._limit:
                self._log.warning("kernel %s holds %d MiB, more than its %d MiB: killed",
                                  self._name, used >> 20, self._limit >> 20)
                try:
                    os.kill(self._root, signal.SIGKILL)  # bwrap: the sandbox dies with it
                except OSError:
                    pass
                return
            wait = NEAR_INTERVAL if used * 2 > self._limit else INTERVAL
