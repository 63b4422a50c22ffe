"""Snapshots of `codebox serve`'s sessions (extension ``snapshots``) and pause on idle.

A key's snapshots live in the data directory (``snapshots/<id>``, written atomically by
`LocalBox`) and in the store (`SnapshotRecord`): they belong to the key that took them
(another key gets a 404), count toward its quota (`ServerSettings.snapshot_quota`, checked
while the snapshot streams and again, in one transaction, when it is recorded) and
survive restarts.

With ``pause_idle``, housekeeping leases the sessions unused that long (`take_pausable`:
each to one server), snapshots each and frees its kernel: the session is ``paused``. The
next request for it resumes it: one server takes the resume lease and starts a box from
the snapshot under the same id; a server that finds another one resuming waits for it.
Whatever the snapshot could not keep is said once by the next run (on stderr). A pause
snapshot is the server's own: it is not in the key's list, and goes when the session
resumes or ends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CodeBoxError
from ..local._snapshots import SnapshotDir, SnapshotTooLarge, check_id
from ..schema import Snapshot
from .store import PAUSED, PAUSING, RESUMING, RUNNING, SessionRecord, SnapshotRecord

if TYPE_CHECKING:
    from .sessions import Session, SessionManager

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
"""The snapshots' directory in the data directory."""

LEASE = 300.0
"""Seconds a server holds a session it pauses or resumes; past them (it died meanwhile),
the session goes back (running, or paused on its snapshot)."""

RESUME_WAIT = 120.0
"""Seconds a request waits for another server's pause or resume of its session."""
_POLL = 0.1


class SnapshotNotFound(CodeBoxError):
    """No snapshot with that id belongs to the caller's key (HTTP 404)."""


def snapshot_dir(data_dir: Path) -> SnapshotDir:
    return SnapshotDir(data_dir / SNAPSHOTS)


def _store_of(manager: SessionManager) -> SnapshotDir:
    assert manager.data_dir is not None
    return snapshot_dir(manager.data_dir)


# -- a key's snapshots -------------------------------------------------------------------------


async def take(manager: SessionManager, session: Session) -> Snapshot:
    """Snapshot ``session`` for its key, within the key's quota.

    Raises:
        SnapshotTooLarge: It would take the key's snapshots past the quota (nothing kept).
    """
    quota = manager.settings.snapshot_quota
    room = quota - await manager.store.snapshot_usage(session.owner)
    if room <= 0:
        raise SnapshotTooLarge(f"this API key's snapshots take {quota - room} bytes of the "
                               f"{quota} it may have: delete some first")
    try:
        snapshot = await manager.operate(session,
                                         lambda: session.box._asnapshot_within(room))
    except SnapshotTooLarge:
        raise SnapshotTooLarge(f"the snapshot would take this API key's snapshots past the "
                               f"{quota} bytes it may have ({room} left): delete some "
                               "first") from None
    record = SnapshotRecord(snapshot.id, session.owner, session.id, snapshot.size,
                            snapshot.created.timestamp(), f"{SNAPSHOTS}/{snapshot.id}")
    if not await manager.store.add_snapshot(record, quota):  # another one came first
        await asyncio.to_thread(_store_of(manager).delete, snapshot.id)
        raise SnapshotTooLarge(f"the snapshot would take this API key's snapshots past the "
                               f"{quota} bytes it may have: delete some first")
    log.info("session %s: snapshot %s (%d bytes)", session.id, snapshot.id, snapshot.size)
    return snapshot


async def owned(manager: SessionManager, owner: str, snapshot_id: str) -> SnapshotRecord:
    """The snapshot ``snapshot_id`` of ``owner``.

    Raises:
        SnapshotNotFound: There is none (or it is another key's).
    """
    try:
        check_id(snapshot_id)
    except CodeBoxError:
        raise SnapshotNotFound(f"no snapshot {snapshot_id!r}") from None
    record = await manager.store.get_snapshot(snapshot_id)
    if record is None or not secrets.compare_digest(record.owner, owner):
        raise SnapshotNotFound(f"no snapshot {snapshot_id!r}")
    return record


async def delete(manager: SessionManager, owner: str, snapshot_id: str) -> None:
    """Remove a snapshot of ``owner`` (see `owned`)."""
    await owned(manager, owner, snapshot_id)
    if await manager.store.remove_snapshot(snapshot_id):
        await asyncio.to_thread(_store_of(manager).delete, snapshot_id)


async def drop_pause_snapshot(manager: SessionManager, record: SessionRecord) -> None:
    """Remove the snapshot a paused session was resumed from, or ended with."""
    if record.snapshot_id is not None:
        await asyncio.to_thread(_store_of(manager).delete, record.snapshot_id)


# -- pause on idle ------------------------------------------------------------------------------


async def pause_idle(manager: SessionManager) -> None:
    """Pause the sessions unused for ``pause_idle`` seconds, on any server of the store."""
    idle = manager.settings.pause_idle
    if idle is None:
        return
    taken = await manager.store.take_pausable(time.time(), idle, manager.server_id, LEASE)
    for record in taken:
        task = asyncio.get_running_loop().create_task(_pause(manager, record))
        manager.track(task)


async def _pause(manager: SessionManager, record: SessionRecord) -> None:
    """Snapshot a session this server leased, free its kernel, record it ``paused``."""
    session = manager.served(record)
    try:
        async with manager.use(session, touch=False):
            snapshot = await session.box._asnapshot_within(None)
    except (CodeBoxError, OSError) as exc:
        log.warning("session %s: could not pause it (it goes on running): %s", record.id, exc)
        await manager.store.release_pause(record.id, manager.server_id)
        return
    if not await manager.store.set_paused(record.id, manager.server_id, snapshot.id):
        log.warning("session %s: its pause lease ran out; it goes on running", record.id)
        await asyncio.to_thread(_store_of(manager).delete, snapshot.id)
        return
    await manager.let_go(session)
    log.info("session %s paused (snapshot %s, %d bytes)", record.id, snapshot.id,
             snapshot.size)


async def resume(manager: SessionManager, record: SessionRecord) -> Session:
    """The session of ``record`` (paused, or being paused or resumed), running again.

    Raises:
        SessionNotFound: It ended meanwhile.
        CodeBoxError: Its kernel could not be started again.
    """
    from .sessions import SessionNotFound

    deadline = time.monotonic() + RESUME_WAIT
    while True:
        if record.status == PAUSED:
            taken = await manager.store.take_resume(record.id, manager.server_id, LEASE)
            if taken is not None:
                return await _resume(manager, taken)
        elif record.status == RUNNING and record.kernel_id is not None:
            return manager.served(record)
        elif record.status not in (PAUSING, RESUMING):
            raise SessionNotFound(f"no session {record.id}")
        if time.monotonic() > deadline:
            raise CodeBoxError(f"session {record.id}: another server did not finish pausing "
                               f"or resuming it within {RESUME_WAIT:g} s")
        await asyncio.sleep(_POLL)  # another server pauses or resumes it: wait for it
        again = await manager.store.get(record.id)
        if again is None:
            raise SessionNotFound(f"no session {record.id}")
        record = again


async def _resume(manager: SessionManager, record: SessionRecord) -> Session:
    assert record.snapshot_id is not None
    try:
        session = await manager.start_from(record, record.snapshot_id)
    except BaseException:
        await manager.store.release_resume(record.id, manager.server_id)
        raise
    await drop_pause_snapshot(manager, record)
    log.info("session %s resumed from snapshot %s", record.id, record.snapshot_id)
    return session
