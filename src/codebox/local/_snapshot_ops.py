"""Snapshots of a `LocalBox`, as operations: `take` streams the box's files, packages and
variables out of its kernel into a snapshot's directory (`_snapshots`); `restore` pushes a
snapshot into a kernel that was just set up (see `KernelState.after_setup`). Pure:
generators that yield requests (disk work included, as `Disk`) and receive results.

What "the packages installed into the box" are: a kernel with a package directory of its
own (``CODEBOX_SITE``: a sandboxed box, a box of a template) keeps them there, and that
directory is part of the snapshot. A plain kernel installs into the interpreter it shares
with others; its snapshot records the requirements `install` was given, and a restore
installs those the kernel's interpreter does not have.
"""

from __future__ import annotations

from typing import Any

from .._engine import Op
from ..base import INSTALL_TIMEOUT  # (what `install` gives by default)
from ..errors import CodeBoxError
from ..schema import Snapshot
from ._jupyter import Message
from ._kernel import Call, KernelConfig, KernelState, call, finish, interrupt_quietly, submit
from ._lifecycle import ensure_kernel
from ._requests import Disconnect, Disk
from ._snapshots import PARTS, SnapshotDir, SnapshotReader, SnapshotTooLarge


def take(st: KernelState, cfg: KernelConfig, store: SnapshotDir, limit: int | None
         ) -> Op[Snapshot]:
    """Snapshot the box into ``store`` (at most ``limit`` bytes); its `Snapshot`.

    Raises:
        SnapshotTooLarge: It grew past ``limit`` (nothing is kept).
        CodeBoxError: The kernel failed (nothing is kept).
    """
    yield from ensure_kernel(st, cfg)
    assert st.root is not None
    writer = yield Disk(lambda: store.writer(limit))
    end: dict[str, Any] = {}

    def react(msg: Message) -> list[Any]:
        if "part" in msg.content:
            part, pieces = msg.content["part"], list(msg.buffers)
            return [Disk(lambda: writer.write(part, pieces))]
        end.update(msg.content)
        return []

    calls: dict[str, Call] = {}
    try:
        msg_id = yield from submit(st, calls, cfg.dialect.snapshot(st.root, cfg.chunk_size,
                                                                   limit), emit=react)
        try:
            yield from finish(st, cfg, calls, msg_id, cfg.timeout, "snapshot")
        except SnapshotTooLarge:
            # The kernel may still be sending: stop it, and drop what is under way.
            yield from interrupt_quietly(st)
            yield Disconnect()
            raise
        except CodeBoxError as exc:
            if "OverflowError" in str(exc):  # the kernel's own count of the limit
                raise SnapshotTooLarge(f"the snapshot is larger than the {limit} bytes it "
                                       "may take") from None
            raise
        if not end.get("done"):
            raise CodeBoxError("snapshot: the kernel ended without saying it was done")
        unpicklable = [str(name) for name in end.get("unpicklable") or []]
        restore = {"installed": list(st.installed), "not_restored": list(st.not_restored)}
        snapshot: Snapshot = yield Disk(lambda: writer.commit(unpicklable, restore))
    except BaseException:
        writer.abort()  # (no yield here: the operation may be closing)
        raise
    return snapshot


def restorer(store: SnapshotDir, snapshot_id: str
             ) -> Any:
    """The `KernelState.after_setup` of a box that starts from ``snapshot_id``."""

    def after_setup(st: KernelState, cfg: KernelConfig) -> Op[None]:
        reader = yield Disk(lambda: store.open(snapshot_id))
        try:
            yield from restore(st, cfg, reader)
        finally:
            reader.close()

    return after_setup


def restore(st: KernelState, cfg: KernelConfig, reader: SnapshotReader) -> Op[None]:
    """Push the snapshot into the kernel: its files and packages, the requirements a plain
    kernel lacks, its variables. What could not be restored is said once by the next run
    (`KernelState.not_restored`)."""
    assert st.root is not None
    lost: list[str] = []
    first = yield from _push(st, cfg, reader, PARTS[0], True)
    installed = [str(r) for r in reader.restore.get("installed") or []]
    if installed:
        lost += yield from _install_missing(st, cfg, installed)
        st.installed = installed
    yield from _push(st, cfg, reader, PARTS[1], first)
    (answer,) = yield from call(st, cfg, cfg.dialect.restore_end(), cfg.timeout, "restore")
    # (What the box this snapshot was taken of had not yet said it lost comes first.)
    lost = [str(item) for item in reader.restore.get("not_restored") or []] + [
        f"{name} (it could not be pickled)" for name in reader.snapshot.unpicklable
    ] + [str(item) for item in answer.content.get("failed") or []] + lost
    st.not_restored, st.restored_from = lost, reader.snapshot.id


def _push(st: KernelState, cfg: KernelConfig, reader: SnapshotReader, part: str,
          first: bool) -> Op[bool]:
    """Send the stream ``part`` to the kernel in chunks, two in flight (the next travels
    while the kernel takes this one); whether nothing was sent yet (still ``first``)."""
    assert st.root is not None
    calls: dict[str, Call] = {}
    while True:
        data = yield Disk(lambda: reader.read(part, cfg.chunk_size))
        if not data:
            break
        yield from submit(st, calls, cfg.dialect.restore(st.root, first), (data,))
        first = False
        if len(calls) == 2:
            yield from finish(st, cfg, calls, next(iter(calls)), cfg.timeout, "restore")
    while calls:
        yield from finish(st, cfg, calls, next(iter(calls)), cfg.timeout, "restore")
    return first


def _install_missing(st: KernelState, cfg: KernelConfig, requirements: list[str]
                     ) -> Op[list[str]]:
    """Install the ``requirements`` the kernel's interpreter lacks; what could not be."""
    assert st.root is not None
    (answer,) = yield from call(st, cfg, cfg.dialect.missing(requirements), cfg.timeout,
                                "restore")
    missing = [str(r) for r in answer.content.get("missing") or []]
    if not missing:
        return []
    (result,) = yield from call(st, cfg, cfg.dialect.install(st.root, missing),
                                INSTALL_TIMEOUT, "restore: install")
    if result.content.get("returncode") == 0:
        return []
    return [f"the packages {', '.join(missing)} (pip failed)"]
