"""A box's memory, counted from the outside, where no memory cgroup can hold it (codebox
not running as root, and no cgroup delegated to it): ``RLIMIT_AS`` bounds each process of the
box, not the box; this sums them.

Every `INTERVAL` seconds it adds up the private resident memory of every process of the
sandbox (found from its first process through ``/proc/<pid>/task/*/children``) and what
the box keeps in its ``/tmp`` and ``/dev/shm`` (tmpfs: memory, which no process's RSS
shows), and kills the whole sandbox when the sum passes the box's ``memory_mb``: the kernel
dies (the box says so; its next run gets a fresh kernel). What it cannot stop is a box that
grows past its limit and back within one interval.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

INTERVAL = 0.2
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


async def watch(root: int, limit: int, name: str, log: Any) -> None:
    """Kill the sandbox of ``root`` once it holds more than ``limit`` bytes; return when it
    is gone."""
    while True:
        await asyncio.sleep(INTERVAL)
        if not os.path.exists(f"/proc/{root}"):
            return
        used = await asyncio.to_thread(usage, root)
        if used > limit:
            log.warning("kernel %s holds %d MiB, more than its %d MiB: killed", name,
                        used >> 20, limit >> 20)
            try:
                os.kill(root, signal.SIGKILL)  # bwrap: the sandbox dies with it
            except OSError:
                pass
            return
