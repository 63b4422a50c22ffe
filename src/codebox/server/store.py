"""Where `codebox serve` keeps its sessions: `SessionStore`, and `SqliteSessionStore`, its
embedded implementation on the standard library's sqlite3.

The store is the only state the servers share. A server keeps live connections to the
kernels of the sessions it served (a cache), but every decision that must hold across
servers is a transaction here: the per-key limit (`reserve`), who culls an idle session
(`take_idle`, which hands each one to exactly one server), and which kernel a session is on.

One SQLite file serves the processes of one machine (WAL journal, short transactions,
a busy timeout). It is not for a file system shared between machines: SQLite's locking
does not hold over NFS and the like. docs/deployment.md says what to use then.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

BUSY_TIMEOUT = 10.0
"""Seconds a transaction waits for another process's write lock before failing."""

_SCHEMA_VERSION = 1
_SCHEMA = """
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


_COLUMNS = "id, owner, kernel_id, root, directory, env, created, last_used"


@dataclass(frozen=True)
class SessionRecord:
    """What the store knows of one session."""

    id: int
    owner: str
    kernel_id: str | None
    root: str | None
    directory: str | None
    env: dict[str, str]
    created: float
    last_used: float

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> SessionRecord:
        (session_id, owner, kernel_id, root, directory, env, created, last_used) = row
        return cls(session_id, owner, kernel_id, root, directory, json.loads(env), created,
                   last_used)


class SessionStore(Protocol):
    """The sessions of every server sharing this store. Each method is one transaction."""

    def reserve(self, owner: str, limit: int, directory_for: DirectoryFor | None = None,
                env: dict[str, str] | None = None) -> SessionRecord | None:
        """Record a new session of ``owner`` (no kernel yet) under a fresh, unguessable id,
        unless ``owner`` holds ``limit`` sessions already (then None)."""

    def get(self, session_id: int) -> SessionRecord | None:
        """The session, or None."""

    def set_kernel(self, session_id: int, kernel_id: str | None, root: str | None) -> bool:
        """Record the session's kernel; False if the session is gone."""

    def touch(self, used: Mapping[int, float]) -> None:
        """Record when sessions were last used (never moving ``last_used`` back)."""

    def remove(self, session_id: int) -> bool:
        """Forget the session; True if this call removed it."""

    def take_idle(self, before: float) -> list[SessionRecord]:
        """Remove and return the sessions last used before ``before``: each goes to one
        caller only, which then stops its kernel."""

    def count(self, owner: str | None = None) -> int:
        """Sessions of ``owner`` (of everyone if None), those starting included."""

    def close(self) -> None:
        """Release the store's resources."""


class DirectoryFor(Protocol):
    def __call__(self, session_id: int) -> str | None: ...


def new_session_id() -> int:
    # Not guessable, and exact as a JSON number in every language (< 2**53).
    return secrets.randbelow(2**53 - 1) + 1


class SqliteSessionStore:
    """`SessionStore` in one SQLite database: a file, or ``":memory:"`` for sessions that
    cannot outlive the server anyway (kernels on a gateway it spawned).

    Args:
        path: The database file (created if missing) or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # Autocommit mode: each method opens its own transaction (BEGIN IMMEDIATE takes the
        # write lock up front, so a read-then-write cannot be overtaken by another process).
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()  # one connection, used from the loop and its threads
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")  # readers never wait on writers
                # Durable against a crash of the process; a power cut may lose the last
                # commits, which for session bookkeeping is the right trade.
                self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer codebox "
                                   f"(schema {version}, this one knows {_SCHEMA_VERSION})")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def reserve(self, owner: str, limit: int, directory_for: DirectoryFor | None = None,
                env: dict[str, str] | None = None) -> SessionRecord | None:
        now = time.time()
        env = dict(env or {})
        with self._transaction() as db:
            (held,) = db.execute("SELECT count(*) FROM sessions WHERE owner = ?",
                                 (owner,)).fetchone()
            if held >= limit:
                return None
            while True:
                session_id = new_session_id()
                directory = directory_for(session_id) if directory_for else None
                try:
                    db.execute("INSERT INTO sessions (id, owner, directory, env, created, "
                               "last_used) VALUES (?, ?, ?, ?, ?, ?)",
                               (session_id, owner, directory, json.dumps(env), now, now))
                except sqlite3.IntegrityError:
                    continue  # that id is taken: draw again
                return SessionRecord(session_id, owner, None, None, directory, env, now, now)

    def get(self, session_id: int) -> SessionRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",
                                   (session_id,)).fetchone()
        return SessionRecord.from_row(row) if row else None

    def set_kernel(self, session_id: int, kernel_id: str | None, root: str | None) -> bool:
        with self._transaction() as db:
            cursor = db.execute("UPDATE sessions SET kernel_id = ?, root = ? WHERE id = ?",
                                (kernel_id, root, session_id))
            return cursor.rowcount == 1

    def touch(self, used: Mapping[int, float]) -> None:
        if not used:
            return
        with self._transaction() as db:
            db.executemany("UPDATE sessions SET last_used = max(last_used, ?) WHERE id = ?",
                           [(when, session_id) for session_id, when in used.items()])

    def remove(self, session_id: int) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 1

    def take_idle(self, before: float) -> list[SessionRecord]:
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE last_used < ?",
                              (before,)).fetchall()
            db.executemany("DELETE FROM sessions WHERE id = ?", [(r[0],) for r in rows])
        return [SessionRecord.from_row(row) for row in rows]

    def count(self, owner: str | None = None) -> int:
        with self._lock:
            if owner is None:
                row = self._db.execute("SELECT count(*) FROM sessions").fetchone()
            else:
                row = self._db.execute("SELECT count(*) FROM sessions WHERE owner = ?",
                                       (owner,)).fetchone()
        return int(row[0])

    def ids(self, session_ids: Iterable[int]) -> set[int]:
        """Which of ``session_ids`` the store still holds."""
        wanted = list(session_ids)
        if not wanted:
            return set()
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM sessions WHERE id IN ({','.join('?' * len(wanted))})", wanted
            ).fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """``with`` block: the connection, inside BEGIN IMMEDIATE ... COMMIT (or ROLLBACK)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self._lock.release()
