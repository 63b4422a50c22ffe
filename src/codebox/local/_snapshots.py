"""Where `LocalBox` snapshots live on this machine: one directory per snapshot under a root
(``CODEBOX_SNAPSHOT_DIR``, by default ``snapshots`` in codebox's cache directory; `codebox
serve` keeps its own in its data directory).

A snapshot's directory holds ``manifest.json`` (what `Snapshot` says, and how to restore)
and its two record streams as the kernel sent them, ``files`` and ``vars`` (see
`_snapshot_code`): this side never interprets what a kernel sent, it only stores it and
gives it back.

Written atomically: a snapshot is written into a temporary directory beside the others
(``.tmp-<pid>-<id>``) and renamed to its id only once complete. A process that dies while
writing leaves no snapshot under that id, and every other snapshot as it was; its leftover
is removed by the next snapshot taken under the same root. (Against a crash of the
process, as the session store; the data is not fsynced, so a power cut may lose a snapshot
just taken.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CodeBoxError, CodeBoxNotFoundError
from ..schema import Snapshot
from ..settings import CodeBoxSettings

FORMAT = 1
"""The layout of a snapshot's directory; in its manifest."""
PARTS = ("files", "vars")
MANIFEST = "manifest.json"
_ID = re.compile(r"[0-9a-f]{32}")
_TEMP = re.compile(r"\.tmp-(\d+)-[0-9a-f]{32}")


class SnapshotTooLarge(CodeBoxError):
    """A snapshot grew past the bytes it may take (HTTP 413 on a server)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, http_status=413)


def new_id() -> str:
    """A fresh snapshot id: 32 hex digits, unguessable."""
    return secrets.token_hex(16)


def check_id(snapshot_id: str) -> str:
    """``snapshot_id`` if it is one (no path can hide in it).

    Raises:
        CodeBoxNotFoundError: It is not a snapshot id.
    """
    if not isinstance(snapshot_id, str) or not _ID.fullmatch(snapshot_id):
        raise CodeBoxNotFoundError(f"no snapshot {snapshot_id!r}")
    return snapshot_id


def default_root(settings: CodeBoxSettings) -> Path:
    return settings.snapshot_dir or settings.cache_dir / "snapshots"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SnapshotWriter:
    """One snapshot being written (its temporary directory); `commit` makes it visible.

    Args:
        root: The snapshots' directory.
        limit: Most bytes the snapshot may take (None: no limit).
    """

    def __init__(self, root: Path, limit: int | None = None) -> None:
        self.id = new_id()
        self.root = root
        self.limit = limit
        self.size = 0
        self.path = root / f".tmp-{os.getpid()}-{self.id}"
        self.path.mkdir(mode=0o700)
        self._files: dict[str, BinaryIO] = {
            part: open(self.path / part, "wb") for part in PARTS}  # noqa: SIM115

    def write(self, part: str, pieces: list[Any]) -> None:
        """Append ``pieces`` (bytes-like) to the stream ``part``.

        Raises:
            SnapshotTooLarge: The snapshot grew past its limit.
            CodeBoxError: ``part`` is not a stream of a snapshot.
        """
        f = self._files.get(part)
        if f is None:
            raise CodeBoxError(f"snapshot: the kernel sent a part {part!r:.40}")
        for piece in pieces:
            self.size += memoryview(piece).nbytes
            if self.limit is not None and self.size > self.limit:
                raise SnapshotTooLarge(f"the snapshot is larger than the {self.limit} bytes "
                                       "it may take")
            f.write(piece)

    def commit(self, unpicklable: list[str], restore: dict[str, Any]) -> Snapshot:
        """Close the streams, write the manifest and rename the directory to the id."""
        for f in self._files.values():
            f.close()
        snapshot = Snapshot(id=self.id, created=datetime.now(UTC), size=self.size,
                            unpicklable=list(unpicklable))
        manifest = {"format": FORMAT, **snapshot.model_dump(mode="json"), "restore": restore}
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.rename(self.path, self.root / self.id)
        return snapshot

    def abort(self) -> None:
        """Remove what was written (idempotent)."""
        for f in self._files.values():
            f.close()
        shutil.rmtree(self.path, ignore_errors=True)


class SnapshotReader:
    """One snapshot's streams, read in pieces for a restore."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.sizes = {part: (path / part).stat().st_size for part in PARTS}
        self._files: dict[str, BinaryIO] = {}

    @property
    def snapshot(self) -> Snapshot:
        return Snapshot.model_validate({k: self.manifest[k] for k in
                                        ("id", "created", "size", "unpicklable")})

    @property
    def restore(self) -> dict[str, Any]:
        """How to restore it: ``installed`` (requirements `install` added to a kernel
        without a package directory of its own)."""
        return dict(self.manifest.get("restore") or {})

    def read(self, part: str, size: int) -> bytes:
        """The next at most ``size`` bytes of ``part`` (b"" at its end)."""
        f = self._files.get(part)
        if f is None:
            f = self._files[part] = open(self.path / part, "rb")  # noqa: SIM115
        return f.read(size)

    def close(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.close()


class SnapshotDir:
    """The snapshots under one directory.

    Args:
        root: The directory (made, mode 0700, when the first snapshot is written).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def writer(self, limit: int | None = None) -> SnapshotWriter:
        """A new snapshot to write (leftovers of writers that died are removed first)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_leftovers()
        return SnapshotWriter(self.root, limit)

    def open(self, snapshot_id: str) -> SnapshotReader:
        """The snapshot ``snapshot_id``, to read.

        Raises:
            CodeBoxNotFoundError: There is none.
            CodeBoxError: Its manifest is unreadable or of a newer codebox.
        """
        path = self.root / check_id(snapshot_id)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise CodeBoxNotFoundError(f"no snapshot {snapshot_id!r}") from None
        except (OSError, ValueError) as exc:
            raise CodeBoxError(f"snapshot {snapshot_id}: unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CodeBoxError(f"snapshot {snapshot_id} was written by another codebox "
                               f"(not format {FORMAT})")
        return SnapshotReader(path, manifest)

    def get(self, snapshot_id: str) -> Snapshot:
        """What `Snapshot` says of ``snapshot_id`` (see `open`)."""
        return self.open(snapshot_id).snapshot

    def delete(self, snapshot_id: str) -> bool:
        """Remove the snapshot; whether there was one."""
        path = self.root / check_id(snapshot_id)
        if not path.is_dir():
            return False
        # Renamed away first: a reader never sees half of it, and the id is gone at once.
        doomed = self.root / f".tmp-{os.getpid()}-{new_id()}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _remove_leftovers(self) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                match = _TEMP.fullmatch(entry.name)
                if match and not _pid_alive(int(match.group(1))):
                    shutil.rmtree(entry.path, ignore_errors=True)
