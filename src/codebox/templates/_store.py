"""Where built templates live, and their bookkeeping: a content-addressed directory tree.

Under ``<CODEBOX_CACHE_DIR>/templates``:

- ``envs/<id>/``: the environment, read-only once built, with ``codebox-template.json``
  (the template, its interpreter, what the sandbox binds, sizes, when it was built);
- ``kernels/codebox-template-<id>/kernel.json``: its kernelspec (the spawned gateway looks
  here, see `codebox.local._gateway`);
- ``used/<id>``: touched when a box uses it (its mtime is the last use, for `prune`);
- ``locks/<id>.lock``: held while one process builds or removes it (an ``flock``: threads
  and processes alike wait for it);
- ``../building/<id>-*``: a build under way, renamed into place when complete.

An environment is complete when its directory and its kernelspec exist: the rename is the
moment it appears, and the kernelspec is (re)written under the lock right after.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._template_kernel import KERNEL_NAME_PREFIX
from ..errors import CodeBoxError, CodeBoxTimeoutError

log = logging.getLogger(__name__)

META_FILE = "codebox-template.json"
_REMOVE_PREFIX = ".remove-"
_LOCK_POLL = 0.05


@dataclass(frozen=True)
class Layout:
    """The paths of the templates under one cache directory."""

    root: Path

    @classmethod
    def under(cls, cache_dir: str | os.PathLike[str]) -> Layout:
        return cls(Path(cache_dir).expanduser().resolve() / "templates")

    def env(self, template_id: str) -> Path:
        return self.root / "envs" / template_id

    def kernels(self) -> Path:
        """The directory of the templates' kernelspecs (``JUPYTER_PATH`` takes ``root``)."""
        return self.root / "kernels"

    def kernelspec(self, template_id: str) -> Path:
        return self.kernels() / f"{KERNEL_NAME_PREFIX}{template_id}" / "kernel.json"

    def used(self, template_id: str) -> Path:
        return self.root / "used" / template_id

    def lock(self, template_id: str) -> Path:
        return self.root / "locks" / f"{template_id}.lock"

    @property
    def cache(self) -> Path:
        """The codebox cache directory the templates are in (with uv's and the bytecode
        cache: builds hard-link from those, so they share one file system and one mount)."""
        return self.root.parent

    def building(self) -> Path:
        """Where builds under way are (outside ``root``, which a build sees read-only)."""
        return self.cache / "building"

    def temporary(self, template_id: str) -> Path:
        return self.building() / f"{template_id}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class BuiltTemplate:
    """A template built on this machine.

    Attributes:
        id: The template's id.
        path: Its environment (read-only).
        python: The environment's interpreter.
        python_version: Its full version.
        paths: What a sandboxed kernel of it reads: the environment and the interpreter's
            installation.
        preload: The import statements its kernels run at start.
        env: Variables of its kernels.
        size: Bytes of its files (each file once).
        files: Number of its files.
        built: When it was built (UTC).
        last_used: When a box last used it (UTC).
        template: The template's fields, as given.
    """

    id: str
    path: str
    python: str
    python_version: str
    paths: tuple[str, ...]
    preload: str
    env: dict[str, str]
    size: int
    files: int
    built: datetime
    last_used: datetime
    template: dict[str, Any]

    def sandbox_field(self) -> dict[str, Any]:
        """The ``template`` field of a sandbox policy (see `codebox._template_kernel`)."""
        return {"id": self.id, "python": self.python, "paths": list(self.paths),
                "preload": self.preload, "env": dict(self.env)}


def read(layout: Layout, template_id: str) -> BuiltTemplate | None:
    """The complete build of ``template_id``, or None."""
    env = layout.env(template_id)
    try:
        meta = json.loads((env / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not layout.kernelspec(template_id).is_file():
        return None
    try:
        used = layout.used(template_id).stat().st_mtime
    except OSError:
        used = meta["built"]
    return BuiltTemplate(
        id=template_id, path=str(env), python=meta["python"],
        python_version=meta["python_version"], paths=tuple(meta["paths"]),
        preload=meta["preload"], env=meta["env"], size=meta["size"], files=meta["files"],
        built=datetime.fromtimestamp(meta["built"], UTC),
        last_used=datetime.fromtimestamp(used, UTC), template=meta["template"])


def write_meta(env: Path, meta: dict[str, Any]) -> None:
    (env / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))


def touch(layout: Layout, template_id: str) -> None:
    """Record a use of the template now."""
    marker = layout.used(template_id)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as exc:  # a read-only cache still serves
        log.debug("cannot record the use of template %s: %s", template_id, exc)


def listing(layout: Layout) -> list[BuiltTemplate]:
    """Every complete build, most recently used first."""
    try:
        names = [p.name for p in (layout.root / "envs").iterdir() if not p.name.startswith(".")]
    except OSError:
        return []
    found = [b for b in (read(layout, name) for name in names) if b is not None]
    return sorted(found, key=lambda b: b.last_used, reverse=True)


def tree_size(path: Path) -> tuple[int, int]:
    """Bytes and number of the files under ``path``, each file (inode) once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                size += st.st_size
    return size, len(seen)


def set_read_only(path: Path, read_only: bool = True) -> None:
    """Make the directories under ``path`` read-only (nothing can be added, removed or
    renamed in them), or writable again. Files keep their modes: they may be hard links
    into uv's cache, whose files are not ours to change."""
    mode = 0o555 if read_only else 0o755
    dirs = [top for top, _, _ in os.walk(path)]
    for top in reversed(dirs) if read_only else dirs:
        st = os.lstat(top)
        if stat.S_ISDIR(st.st_mode):
            os.chmod(top, mode)


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) environment: renamed away first, so it disappears at
    once, then deleted."""
    if not path.exists():
        return
    doomed = path.with_name(f"{_REMOVE_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.chmod(path.parent, os.stat(path.parent).st_mode | stat.S_IWUSR)
        path.rename(doomed)
    except OSError:
        doomed = path
    with contextlib.suppress(OSError):
        set_read_only(doomed, False)
    shutil.rmtree(doomed, ignore_errors=True)


def sweep(layout: Layout, template_id: str) -> None:
    """Remove what unfinished builds and removals of ``template_id`` left (a process killed
    meanwhile). Call with its lock held."""
    leftovers = [*layout.building().glob(f"{template_id}-*"),
                 *(layout.root / "envs").glob(f"{_REMOVE_PREFIX}{template_id}-*")]
    for leftover in leftovers:
        log.info("removing %s, left by an unfinished build", leftover)
        remove_tree(leftover)


def remove(layout: Layout, template_id: str, *, timeout: float = 60.0) -> bool:
    """Remove a built template (its environment, kernelspec and records); False if there
    was none. Boxes running on it lose it: remove templates no box uses."""
    with locked(layout, template_id, timeout):
        env = layout.env(template_id)
        spec = layout.kernelspec(template_id)
        existed = env.exists() or spec.exists()
        shutil.rmtree(spec.parent, ignore_errors=True)
        remove_tree(env)
        sweep(layout, template_id)
        with contextlib.suppress(OSError):
            layout.used(template_id).unlink()
    return existed


def prune(layout: Layout, unused_for: float, *, now: float | None = None) -> list[str]:
    """Remove the templates no box used for ``unused_for`` seconds; their ids."""
    now = time.time() if now is None else now
    gone = []
    for built in listing(layout):
        if now - built.last_used.timestamp() >= unused_for and remove(layout, built.id):
            gone.append(built.id)
    return gone


@contextlib.contextmanager
def locked(layout: Layout, template_id: str, timeout: float) -> Iterator[None]:
    """Hold the lock of ``template_id`` (an ``flock`` on its lock file, which the holder
    removes on release: a waiter that locked a removed file tries again).

    Raises:
        CodeBoxTimeoutError: Another build held it for ``timeout`` seconds.
    """
    path = layout.lock(template_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if _try_lock(fd):
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if time.monotonic() > deadline:
            raise CodeBoxTimeoutError(
                f"template {template_id}: another build held its lock for {timeout:g} s")
        time.sleep(_LOCK_POLL)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the flock


def _try_lock(fd: int) -> bool:
    import fcntl  # here: importing templates works where there is none (a box needs none)

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise CodeBoxError(f"cannot lock a template build: {exc}") from exc
    return True
