"""A host user of its own for each sandbox, when codebox runs as root.

bubblewrap maps a sandbox's user to the user that starts it: under root, every box would be
host uid 0 (without capabilities, but the owner of every root-owned file it can reach, and
of the files it leaves). So as root each box gets a uid of its own from a range no account
uses (`UIDS`, ``CODEBOX_SANDBOX_UIDS="first:count"``; ``off`` keeps root), held while its
kernel lives: a lock file per uid, ``flock``-ed by the gateway that runs the box, so that
gateways of different processes never hand out the same uid at once, and a gateway that
dies frees its uids with it. The box's own directories are given to that uid; nothing else
on the host is its.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

UIDS = (1_800_000_000, 65_536)
"""The default range of box uids: (first, count). No account uses these."""
_ENV = "CODEBOX_SANDBOX_UIDS"


def uid_range() -> tuple[int, int] | None:
    """The range of box uids, or None when boxes keep the uid that runs them (not root,
    or ``CODEBOX_SANDBOX_UIDS=off``).

    Raises:
        ValueError: ``CODEBOX_SANDBOX_UIDS`` is neither ``off`` nor ``first:count``.
    """
    if os.geteuid() != 0:
        return None
    raw = os.environ.get(_ENV, "").strip()
    if raw.lower() in ("off", "none", "0"):
        return None
    if not raw:
        return UIDS
    try:
        first, count = (int(part) for part in raw.split(":"))
    except ValueError:
        raise ValueError(f"{_ENV} must be 'first:count' or 'off', not {raw!r}") from None
    if first < 1000 or count < 1 or first + count > 2**32 - 2:
        raise ValueError(f"{_ENV}: {raw!r} is not a range of unprivileged uids")
    return first, count


@dataclass
class BoxUser:
    """A uid (and gid of the same number) held for one box until `release`."""

    uid: int
    _lock: int  # the open, flock-ed lock file

    @property
    def gid(self) -> int:
        return self.uid

    def release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)  # the flock goes with it
            self._lock = -1


def _lock_dir() -> Path:
    # Shared by every codebox of the machine, root's alone.
    path = Path(tempfile.gettempdir()) / "codebox-uids-0"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != 0 or path.is_symlink():
        raise PermissionError(f"{path} is not root's own")
    return path


def allocate(span: tuple[int, int]) -> BoxUser:
    """A free uid of ``span`` (first, count), held until released.

    Raises:
        RuntimeError: Every uid of the range is in use.
    """
    first, count = span
    directory = _lock_dir()
    start = random.randrange(count)
    for i in range(min(count, 4096)):
        uid = first + (start + i) % count
        fd = os.open(directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return BoxUser(uid, fd)
    raise RuntimeError(f"no free box uid in {first}..{first + count - 1}")


def chown_tree(path: str, uid: int, gid: int, *, only_from: int | None = None) -> None:
    """Make ``uid``/``gid`` the owner of ``path`` and of everything in it (symlinks
    themselves, never what they point to); with ``only_from``, only what that uid owns."""
    _chown(path, uid, gid, only_from)
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                _chown(os.path.join(root, name), uid, gid, only_from)


def _chown(path: str, uid: int, gid: int, only_from: int | None) -> None:
    try:
        if only_from is not None and os.lstat(path).st_uid != only_from:
            return
        os.chown(path, uid, gid, follow_symlinks=False)
    except FileNotFoundError:
        pass
