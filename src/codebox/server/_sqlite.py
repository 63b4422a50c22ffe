"""`SqliteSessionStore`: the `SessionStore` in one SQLite database, on the standard
library's sqlite3.

One SQLite file serves the processes of one machine (WAL journal, short transactions that
take the write lock up front, a busy timeout). It is not for a file system shared between
machines: SQLite's locking does not hold over NFS and the like (use PostgreSQL then).

sqlite3 blocks, so every call runs on a thread of the store's own, which owns the one
connection: calls are serialised there, as SQLite serialises writers anyway, and the event
loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .._lifetimes import check_lifetime
from . import store as _store
from .store import (
    COLUMNS,
    EXPIRING,
    LIVE,
    PAUSED,
    PAUSING,
    RESUMING,
    RUNNING,
    STARTING,
    STOPPING,
    DirectoryFor,
    SessionRecord,
    SnapshotRecord,
    StoreUnavailable,
)

T = TypeVar("T")

BUSY_TIMEOUT = 10.0
"""Seconds a transaction waits for another process's write lock before failing."""

SCHEMA_VERSION = 2
_SESSIONS = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,      -- digest of the API key that started it, never the key
    kernel_id TEXT,           -- the gateway's kernel id; NULL while its kernel starts
    root TEXT,                -- the kernel's working directory
    directory TEXT,           -- the session's directory on this machine, if any
    env TEXT NOT NULL,        -- JSON: the variables its kernel gets at every start
    created REAL NOT NULL,    -- wall-clock seconds: servers compare them
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner);
CREATE INDEX IF NOT EXISTS sessions_last_used ON sessions (last_used);
"""
# Schema 2: states, lifetimes, leases, and what pausing and snapshots will need.
_UPGRADE_TO_2 = f"""
ALTER TABLE sessions ADD COLUMN status TEXT NOT NULL DEFAULT '{RUNNING}';
UPDATE sessions SET status = '{STARTING}' WHERE kernel_id IS NULL;
ALTER TABLE sessions ADD COLUMN template TEXT;
ALTER TABLE sessions ADD COLUMN lifetime REAL;      -- seconds; NULL: the idle timeout
ALTER TABLE sessions ADD COLUMN lease_holder TEXT;  -- the server stopping it
ALTER TABLE sessions ADD COLUMN lease_until REAL;
ALTER TABLE sessions ADD COLUMN snapshot_id TEXT;   -- what a paused session resumes from
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    session_id INTEGER,       -- the session it was taken of
    size INTEGER NOT NULL,    -- bytes, for the per-key quota
    created REAL NOT NULL,
    location TEXT NOT NULL    -- where its content is
);
CREATE INDEX IF NOT EXISTS snapshots_owner ON snapshots (owner);
"""

_SELECT = f"SELECT {COLUMNS} FROM sessions"
_LIVE = f"status IN ({', '.join(repr(s) for s in LIVE)})"
_EXPIRING = f"status IN ({', '.join(repr(s) for s in EXPIRING)})"
_SNAPSHOT_COLUMNS = "id, owner, session_id, size, created, location"


class SqliteSessionStore:
    """`SessionStore` in one SQLite database: a file, or ``":memory:"`` for sessions that
    cannot outlive the server anyway (kernels on a gateway it spawned).

    Args:
        path: The database file (created if missing) or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="codebox-sqlite")
        self._db: sqlite3.Connection | None = None  # made, used and closed on that thread

    async def open(self) -> None:
        """Create or upgrade the schema.

        Raises:
            RuntimeError: The database was written by a newer codebox.
        """
        await self._call(lambda db: None)

    # -- the thread ----------------------------------------------------------------------

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._on_thread, work)

    def _on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._db is None:
                self._db = self._connect()
            return work(self._db)
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk full
            raise StoreUnavailable(f"the session store failed: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: each method opens its own transaction (BEGIN IMMEDIATE takes the
        # write lock up front, so a read-then-write cannot be overtaken by another process).
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait on writers
            # Durable against a crash of the process; a power cut may lose the last
            # commits, which for session bookkeeping is the right trade.
            db.execute("PRAGMA synchronous=NORMAL")
        with _transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer codebox "
                                   f"(schema {version}, this one knows {SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                for statement in _statements(_SESSIONS + _UPGRADE_TO_2):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    # -- the store -----------------------------------------------------------------------

    async def reserve(self, owner: str, limit: int, directory_for: DirectoryFor | None = None,
                      env: dict[str, str] | None = None, *, template: str | None = None,
                      lifetime: float | None = None) -> SessionRecord | None:
        lifetime = check_lifetime(lifetime)
        env = dict(env or {})
        now = time.time()

        def work(db: sqlite3.Connection) -> SessionRecord | None:
            with _transaction(db):
                (held,) = db.execute(f"SELECT count(*) FROM sessions WHERE owner = ? AND {_LIVE}",
                                     (owner,)).fetchone()
                if held >= limit:
                    return None
                while True:
                    session_id = _store.new_session_id()
                    directory = directory_for(session_id) if directory_for else None
                    try:
                        db.execute(
                            "INSERT INTO sessions (id, owner, status, directory, env, template, "
                            "lifetime, created, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (session_id, owner, STARTING, directory, json.dumps(env), template,
                             lifetime, now, now))
                    except sqlite3.IntegrityError:
                        continue  # that id is taken: draw again
                    return SessionRecord(session_id, owner, STARTING, None, None, directory,
                                         env, template, lifetime, now, now)

        return await self._call(work)

    async def get(self, session_id: int) -> SessionRecord | None:
        if not 0 < session_id < 2**63:  # not an id SQLite can hold: not a session
            return None

        def work(db: sqlite3.Connection) -> SessionRecord | None:
            row = db.execute(f"{_SELECT} WHERE id = ? AND status <> ?",
                             (session_id, STOPPING)).fetchone()
            return SessionRecord.from_row(row) if row else None

        return await self._call(work)

    async def sessions_of(self, owner: str | None) -> list[SessionRecord]:
        def work(db: sqlite3.Connection) -> list[SessionRecord]:
            rows = db.execute(f"{_SELECT} WHERE ? IS NULL OR owner = ? ORDER BY created, id",
                              (owner, owner)).fetchall()
            return [SessionRecord.from_row(row) for row in rows]

        return await self._call(work)

    async def count(self, owner: str | None = None) -> int:
        def work(db: sqlite3.Connection) -> int:
            if owner is None:
                row = db.execute(f"SELECT count(*) FROM sessions WHERE {_LIVE}").fetchone()
            else:
                row = db.execute(f"SELECT count(*) FROM sessions WHERE owner = ? AND {_LIVE}",
                                 (owner,)).fetchone()
            return int(row[0])

        return await self._call(work)

    async def set_kernel(self, session_id: int, kernel_id: str, root: str | None) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                cursor = db.execute(
                    "UPDATE sessions SET kernel_id = ?, root = ?, status = ?, snapshot_id = NULL, "
                    "lease_holder = NULL, lease_until = NULL WHERE id = ? AND status IN (?, ?, ?)",
                    (kernel_id, root, RUNNING, session_id, STARTING, RUNNING, RESUMING))
                return cursor.rowcount == 1

        return await self._call(work)

    async def set_lifetime(self, session_id: int, lifetime: float | None,
                           now: float) -> SessionRecord | None:
        lifetime = check_lifetime(lifetime)

        def work(db: sqlite3.Connection) -> SessionRecord | None:
            with _transaction(db):
                db.execute(f"UPDATE sessions SET lifetime = ?, last_used = max(last_used, ?) "
                           f"WHERE id = ? AND {_LIVE}", (lifetime, now, session_id))
                row = db.execute(f"{_SELECT} WHERE id = ? AND {_LIVE}",
                                 (session_id,)).fetchone()
            return SessionRecord.from_row(row) if row else None

        return await self._call(work)

    async def touch(self, used: dict[int, float]) -> None:
        if not used:
            return
        updates = [(when, session_id) for session_id, when in sorted(used.items())]

        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany("UPDATE sessions SET last_used = max(last_used, ?) WHERE id = ?",
                               updates)

        await self._call(work)

    async def remove(self, session_id: int) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return db.execute("DELETE FROM sessions WHERE id = ?",
                                  (session_id,)).rowcount == 1

        return await self._call(work)

    async def take_idle(self, now: float, default_lifetime: float, holder: str,
                        lease: float) -> list[SessionRecord]:
        def work(db: sqlite3.Connection) -> list[SessionRecord]:
            with _transaction(db):
                ids = [row[0] for row in db.execute(
                    f"SELECT id FROM sessions WHERE ({_EXPIRING} AND "
                    "last_used + coalesce(lifetime, ?) < ?) OR (status = ? AND lease_until < ?)",
                    (default_lifetime, now, STOPPING, now))]
                db.executemany("UPDATE sessions SET status = ?, lease_holder = ?, "
                               "lease_until = ? WHERE id = ?",
                               [(STOPPING, holder, now + lease, i) for i in ids])
                rows = [db.execute(f"{_SELECT} WHERE id = ?", (i,)).fetchone() for i in ids]
            return [SessionRecord.from_row(row) for row in rows]

        return await self._call(work)

    async def take_pausable(self, now: float, idle: float, holder: str,
                            lease: float) -> list[SessionRecord]:
        def work(db: sqlite3.Connection) -> list[SessionRecord]:
            with _transaction(db):
                for stale, back in ((PAUSING, RUNNING), (RESUMING, PAUSED)):
                    db.execute("UPDATE sessions SET status = ?, lease_holder = NULL, "
                               "lease_until = NULL WHERE status = ? AND lease_until < ?",
                               (back, stale, now))
                ids = [row[0] for row in db.execute(
                    "SELECT id FROM sessions WHERE status = ? AND kernel_id IS NOT NULL AND "
                    "last_used + ? < ?", (RUNNING, idle, now))]
                db.executemany("UPDATE sessions SET status = ?, lease_holder = ?, "
                               "lease_until = ? WHERE id = ?",
                               [(PAUSING, holder, now + lease, i) for i in ids])
                rows = [db.execute(f"{_SELECT} WHERE id = ?", (i,)).fetchone() for i in ids]
            return [SessionRecord.from_row(row) for row in rows]

        return await self._call(work)

    async def _move(self, session_id: int, holder: str | None, source: str, target: str,
                    updates: str = "", params: tuple[object, ...] = (),
                    lease: float | None = None) -> SessionRecord | None:
        """Move the session from ``source`` to ``target`` (if ``holder``: only under its
        lease; ``lease``: giving it one); the session then, or None if it was not moved."""

        def work(db: sqlite3.Connection) -> SessionRecord | None:
            with _transaction(db):
                held = "" if holder is None or lease is not None else " AND lease_holder = ?"
                cursor = db.execute(
                    f"UPDATE sessions SET status = ?, lease_holder = ?, lease_until = ?{updates} "
                    f"WHERE id = ? AND status = ?{held}",
                    (target, holder if lease is not None else None,
                     time.time() + lease if lease is not None else None, *params, session_id,
                     source, *(() if not held else (holder,))))
                if cursor.rowcount != 1:
                    return None
                row = db.execute(f"{_SELECT} WHERE id = ?", (session_id,)).fetchone()
            return SessionRecord.from_row(row)

        return await self._call(work)

    async def set_paused(self, session_id: int, holder: str, snapshot_id: str) -> bool:
        return await self._move(session_id, holder, PAUSING, PAUSED,
                                ", kernel_id = NULL, root = NULL, snapshot_id = ?",
                                (snapshot_id,)) is not None

    async def release_pause(self, session_id: int, holder: str) -> None:
        await self._move(session_id, holder, PAUSING, RUNNING)

    async def take_resume(self, session_id: int, holder: str,
                          lease: float) -> SessionRecord | None:
        return await self._move(session_id, holder, PAUSED, RESUMING, lease=lease)

    async def release_resume(self, session_id: int, holder: str) -> None:
        await self._move(session_id, holder, RESUMING, PAUSED)

    async def add_snapshot(self, record: SnapshotRecord, quota: int) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                (used,) = db.execute("SELECT coalesce(sum(size), 0) FROM snapshots "
                                     "WHERE owner = ?", (record.owner,)).fetchone()
                if used + record.size > quota:
                    return False
                db.execute(f"INSERT INTO snapshots ({_SNAPSHOT_COLUMNS}) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (record.id, record.owner, record.session_id, record.size,
                            record.created, record.location))
                return True

        return await self._call(work)

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        def work(db: sqlite3.Connection) -> SnapshotRecord | None:
            row = db.execute(f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?",
                             (snapshot_id,)).fetchone()
            return SnapshotRecord(*row) if row else None

        return await self._call(work)

    async def snapshot_usage(self, owner: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            (used,) = db.execute("SELECT coalesce(sum(size), 0) FROM snapshots WHERE owner = ?",
                                 (owner,)).fetchone()
            return int(used)

        return await self._call(work)

    async def remove_snapshot(self, snapshot_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return db.execute("DELETE FROM snapshots WHERE id = ?",
                                  (snapshot_id,)).rowcount == 1

        return await self._call(work)

    async def close(self) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._call(work)
        self._thread.shutdown(wait=False)


def _statements(script: str) -> list[str]:
    """The statements of a script of ours (no ``;`` inside strings or comments)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class _transaction:
    """``with`` block: BEGIN IMMEDIATE ... COMMIT (or ROLLBACK)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")

