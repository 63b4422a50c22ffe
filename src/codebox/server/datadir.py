"""Whose is a temporary data directory: a server that owns one marks it with its process id
and start time, so that the next server can remove what a killed one left behind (its
sessions' files, its upload spools) without touching a live server's files.

A directory given with ``--data-dir`` is never removed: it keeps sessions on purpose.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..local import _boxdisk

log = logging.getLogger(__name__)

PREFIX = "codebox-server-"
"""How the temporary data directories of servers are named."""

MARKER = "owner.pid"
"""The file in a data directory that names its server: ``<pid> <start time>``."""


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # Fields after the command: state is the 3rd of stat, starttime the 22nd.
    return None if fields[0] == "Z" else fields[19]


def claim(directory: Path) -> None:
    """Mark ``directory`` as this process's."""
    me = os.getpid()
    (directory / MARKER).write_text(f"{me} {_start_time(me) or ''}\n")


def owner_alive(directory: Path) -> bool | None:
    """Whether the server that marked ``directory`` still runs (None: no valid marker)."""
    try:
        pid_text, _, started = (directory / MARKER).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = _start_time(pid)
    return now is not None and (not started or now == started)


def make_temporary() -> Path:
    """A fresh temporary data directory, marked as ours, after removing those that servers
    killed before they could clean up left behind."""
    reap_orphans()
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    claim(directory)
    return directory


def reap_orphans(parent: Path | None = None) -> list[Path]:
    """Remove the temporary data directories under ``parent`` (default: the temporary
    directory) whose server is gone; unmarked ones are left alone. Returns those removed."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    for directory in parent.glob(PREFIX + "*"):
        if directory.is_symlink() or not directory.is_dir():
            continue
        if owner_alive(directory) is False:
            log.info("removing %s, left behind by a server that is gone", directory)
            _boxdisk.detach_all(str(directory))  # its sessions' filesystems, if any
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed
