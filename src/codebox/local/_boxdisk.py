"""A filesystem of its own for a box's working directory: the cap on its total size and on
its number of files (``RLIMIT_FSIZE`` caps one file only).

Where codebox runs as root, the working directory of a box whose directory codebox made
(its own, or a `codebox serve` session's) becomes the mount point of an ext4 filesystem of
``disk_mb`` in a sparse image file. The image lives *inside* that directory, hidden under
the mount: it holds the box's files on the host's disk, not in memory; the box's writes fail
with ``ENOSPC`` once it is full (of bytes or of inodes); it survives kernel restarts (the
mount stays while the kernel lives, and a later kernel mounts the same image again); and
removing the directory once the box is gone removes the image with it, in one unlink
however many files the box made. Mounted ``nosuid,nodev``.

Measured on the machines codebox is developed on (2 cores, ext4 on virtio): making a 2 GiB
image and its filesystem takes ~10 ms, mounting it ~6 ms, unmounting ~2 ms; the image uses
~1 MiB of disk until the box writes. Project quotas would need a filesystem mounted with
them; a tmpfs per box would hold the box's files in memory. Without root (or without
``mkfs.ext4``), the working directory is not sized and the docs say so.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)

IMAGE = ".codebox-disk"
"""The image's name inside the directory it is mounted on."""
FILES_PER_MB = 64
"""Inodes of a box's filesystem per MiB of ``disk_mb`` (2 GiB: 131,072 files)."""
_MIN_INODES = 1024


def can_size() -> bool:
    """Whether working directories can get a filesystem of their own here."""
    return (os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None
            and shutil.which("mount") is not None)


def attach(directory: str, disk_mb: int, *, owner: tuple[int, int] | None = None) -> bool:
    """Mount a filesystem of ``disk_mb`` on ``directory`` (its image made there if it has
    none yet, and only while the directory is empty); ``owner`` (uid, gid) owns its root.
    Whether ``directory`` is such a filesystem now.

    Raises:
        OSError: The image could not be made or mounted (the message says why).
    """
    if os.path.ismount(directory):
        return True
    image = os.path.join(directory, IMAGE)
    if not os.path.exists(image):
        if any(name != IMAGE for name in os.listdir(directory)):
            log.warning("codebox: %s holds files already: not sized", directory)
            return False
        inodes = max(_MIN_INODES, disk_mb * FILES_PER_MB)
        uid, gid = owner or (os.geteuid(), os.getegid())
        fd = os.open(image, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, disk_mb * 1024 * 1024)
        finally:
            os.close(fd)
        _run(["mkfs.ext4", "-q", "-F", "-N", str(inodes), "-m", "0", "-O", "^has_journal",
              "-E", f"lazy_itable_init=1,nodiscard,root_owner={uid}:{gid}", image],
             f"make the filesystem of {directory}")
    _run(["mount", "-o", "loop,nosuid,nodev", image, directory], f"mount {image}")
    os.chmod(directory, 0o700)  # a fresh filesystem's root is 0755
    if owner is not None:
        os.chown(directory, *owner)
    lost = os.path.join(directory, "lost+found")
    if os.path.isdir(lost):
        os.rmdir(lost)  # empty on a fresh filesystem; a box has no use for it
    return True


def detach(directory: str) -> None:
    """Unmount the box's filesystem from ``directory`` (its image stays, with its files)."""
    if os.path.ismount(directory):
        try:
            _run(["umount", directory], f"unmount {directory}")
        except OSError:
            # Something still holds it (a process of the box not yet reaped): detach it
            # now, the kernel frees it when the last user is gone.
            _run(["umount", "-l", directory], f"unmount {directory} lazily")


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OSError(f"cannot {what}: {exc}") from None
    if done.returncode != 0:
        raise OSError(f"cannot {what}: {(done.stderr or done.stdout).strip()}")


def detach_all(under: str) -> None:
    """Unmount every box filesystem mounted at or below ``under`` (a directory whose gateway
    or server died before it could), deepest first, so the directory can be removed."""
    root = os.path.realpath(under).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
    except OSError:
        return
    for point in sorted((p for p in points if (p + "/").startswith(root)), key=len,
                        reverse=True):
        try:
            _run(["umount", "-l", point], f"unmount {point}")
        except OSError as exc:
            log.warning("codebox: %s", exc)
