"""Helpers for the tests."""

from __future__ import annotations

import os
import time
from pathlib import Path


def our_processes(marker: str | None = None) -> list[tuple[int, str]]:
    """Processes (pid, command line) whose environment carries ``marker``."""
    marker = marker or os.environ["CODEBOX_TEST_RUN"]
    found = []
    needle = f"CODEBOX_TEST_RUN={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmd:
            found.append((int(entry.name), cmd))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
