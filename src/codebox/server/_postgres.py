"""`PostgresSessionStore`: the `SessionStore` in PostgreSQL, over psycopg 3's async
connections (a small pool), for `codebox serve` on several machines.

How the transactions that must hold across servers hold:

- **The per-key limit** (`reserve` counts, then inserts): a transaction-scoped advisory lock
  on the key's digest serialises the reservations of one key, and only those. Row locks
  cannot do it (the row that would break the limit does not exist yet), and SERIALIZABLE
  would abort and retry unrelated transactions under load.
- **Culling** (`take_idle`): ``SELECT ... FOR UPDATE SKIP LOCKED`` under an ``UPDATE``
  that leases each expired session to the caller: two servers culling at once never wait on
  each other and never take the same session; a row another server is touching is skipped
  until the next round.
- **Last use** (`touch`): rows are locked in id order first, so two servers recording the
  use of overlapping sessions cannot deadlock.

The tables are ``codebox_sessions``, ``codebox_snapshots`` and ``codebox_meta`` (the schema
version); a database may hold other things too. Times are wall-clock seconds of the
servers, as in the SQLite store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
    redacted,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CONNECT_TIMEOUT = 10.0
"""Seconds to reach the database at start, and to get a connection for one call."""
STATEMENT_TIMEOUT_MS = 10_000
"""Most milliseconds one statement may take (a lock held by a dead peer included)."""
POOL_SIZE = 10
"""Most connections one server holds."""
LOCK_CLASS = 0x636F6462
"""The first key of codebox's advisory locks (``'codb'``); the second is a hash."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS codebox_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS codebox_sessions (
    id BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,                 -- digest of the API key, never the key
    status TEXT NOT NULL DEFAULT '{STARTING}',
    kernel_id TEXT,                      -- the gateway's kernel id; NULL while it starts
    root TEXT,                           -- the kernel's working directory
    directory TEXT,
    env TEXT NOT NULL,                   -- JSON: variables its kernel gets at every start
    template TEXT,
    lifetime DOUBLE PRECISION,           -- seconds after the last use; NULL: idle timeout
    created DOUBLE PRECISION NOT NULL,   -- wall-clock seconds
    last_used DOUBLE PRECISION NOT NULL,
    lease_holder TEXT,                   -- the server stopping it
    lease_until DOUBLE PRECISION,
    snapshot_id TEXT                     -- what a paused session resumes from
);
CREATE INDEX IF NOT EXISTS codebox_sessions_owner ON codebox_sessions (owner);
CREATE INDEX IF NOT EXISTS codebox_sessions_last_used ON codebox_sessions (last_used);
CREATE TABLE IF NOT EXISTS codebox_snapshots (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    session_id BIGINT,
    size BIGINT NOT NULL,                -- bytes, for the per-key quota
    created DOUBLE PRECISION NOT NULL,
    location TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS codebox_snapshots_owner ON codebox_snapshots (owner);
"""

_SELECT = f"SELECT {COLUMNS} FROM codebox_sessions"
_RETURNING = f"RETURNING {COLUMNS}"
_IS_LIVE = "status = ANY(%(live)s)"
_SNAPSHOT_COLUMNS = "id, owner, session_id, size, created, location"


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # A statement waiting on a lock that a stalled peer holds must fail, not hang a request.
    await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


class PostgresSessionStore:
    """`SessionStore` in a PostgreSQL database; make one with `connect`."""

    def __init__(self, pool: AsyncConnectionPool[Any], url: str) -> None:
        self._pool = pool
        self.url = redacted(url)

    @classmethod
    async def connect(cls, url: str, *, timeout: float = CONNECT_TIMEOUT) -> PostgresSessionStore:
        """Connect to the database at ``url`` and create or check codebox's tables.

        Raises:
            StoreUnavailable: It cannot be reached within ``timeout`` seconds.
            RuntimeError: Its tables were written by a newer codebox.
        """
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, open=False, timeout=CONNECT_TIMEOUT,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout))},
            configure=_configure, name="codebox-store")
        try:
            await pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot reach the session store {redacted(url)}: "
                                   f"{exc}") from None
        store = cls(pool, url)
        try:
            await store._create_schema()
        except BaseException:
            await pool.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"the session store {self.url} failed: {exc}") from exc

    async def _create_schema(self) -> None:
        async with self._transaction() as conn:
            # Servers starting together must not create the tables twice.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            await conn.execute(_SCHEMA)
            cursor = await conn.execute("SELECT value FROM codebox_meta WHERE key = 'schema'")
            row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"the session store {self.url} was written by a newer "
                                   f"codebox (schema {version}, this one knows "
                                   f"{SCHEMA_VERSION})")
            await conn.execute(
                "INSERT INTO codebox_meta (key, value) VALUES ('schema', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (str(SCHEMA_VERSION),))

    async def _one(self, query: str, params: Any) -> SessionRecord | None:
        async with self._transaction() as conn:
            cursor = await conn.execute(query, params)
            row = await cursor.fetchone()
        return SessionRecord.from_row(row) if row else None

    # -- the store -----------------------------------------------------------------------

    async def reserve(self, owner: str, limit: int, directory_for: DirectoryFor | None = None,
                      env: dict[str, str] | None = None, *, template: str | None = None,
                      lifetime: float | None = None) -> SessionRecord | None:
        lifetime = check_lifetime(lifetime)
        env = dict(env or {})
        now = time.time()
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (LOCK_CLASS, owner))
            cursor = await conn.execute(
                f"SELECT count(*) FROM codebox_sessions WHERE owner = %(owner)s AND {_IS_LIVE}",
                {"owner": owner, "live": list(LIVE)})
            row = await cursor.fetchone()
            if row is None or row[0] >= limit:
                return None
            while True:
                session_id = _store.new_session_id()
                directory = directory_for(session_id) if directory_for else None
                cursor = await conn.execute(
                    "INSERT INTO codebox_sessions (id, owner, status, directory, env, template, "
                    "lifetime, created, last_used) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (session_id, owner, STARTING, directory, json.dumps(env), template, lifetime,
                     now, now))
                if cursor.rowcount == 1:
                    return SessionRecord(session_id, owner, STARTING, None, None, directory,
                                         env, template, lifetime, now, now)

    async def get(self, session_id: int) -> SessionRecord | None:
        if not 0 < session_id < 2**63:
            return None
        return await self._one(f"{_SELECT} WHERE id = %s AND status <> %s",
                               (session_id, STOPPING))

    async def sessions_of(self, owner: str | None) -> list[SessionRecord]:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"{_SELECT} WHERE %(owner)s::text IS NULL OR owner = %(owner)s "
                "ORDER BY created, id", {"owner": owner})
            rows = await cursor.fetchall()
        return [SessionRecord.from_row(row) for row in rows]

    async def count(self, owner: str | None = None) -> int:
        query = f"SELECT count(*) FROM codebox_sessions WHERE {_IS_LIVE}"
        if owner is not None:
            query += " AND owner = %(owner)s"
        async with self._transaction() as conn:
            cursor = await conn.execute(query, {"owner": owner, "live": list(LIVE)})
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def set_kernel(self, session_id: int, kernel_id: str, root: str | None) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"UPDATE codebox_sessions SET kernel_id = %(kernel)s, root = %(root)s, "
                f"status = %(running)s, snapshot_id = NULL, lease_holder = NULL, "
                f"lease_until = NULL WHERE id = %(id)s AND {_IS_LIVE}",
                {"kernel": kernel_id, "root": root, "running": RUNNING, "id": session_id,
                 "live": [STARTING, RUNNING, RESUMING]})
            return cursor.rowcount == 1

    async def set_lifetime(self, session_id: int, lifetime: float | None,
                           now: float) -> SessionRecord | None:
        lifetime = check_lifetime(lifetime)
        return await self._one(
            f"UPDATE codebox_sessions SET lifetime = %(lifetime)s, "
            f"last_used = GREATEST(last_used, %(now)s) WHERE id = %(id)s AND {_IS_LIVE} "
            f"{_RETURNING}",
            {"lifetime": lifetime, "now": now, "id": session_id, "live": list(LIVE)})

    async def touch(self, used: dict[int, float]) -> None:
        if not used:
            return
        ids = sorted(used)
        times = [used[i] for i in ids]
        async with self._transaction() as conn:
            await conn.execute(
                "WITH locked AS MATERIALIZED (SELECT id FROM codebox_sessions "
                "WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE) "
                "UPDATE codebox_sessions s SET last_used = GREATEST(s.last_used, u.t) "
                "FROM unnest(%(ids)s::bigint[], %(times)s::float8[]) AS u(id, t), locked "
                "WHERE s.id = u.id AND locked.id = u.id",
                {"ids": ids, "times": times})

    async def remove(self, session_id: int) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute("DELETE FROM codebox_sessions WHERE id = %s",
                                        (session_id,))
            return cursor.rowcount == 1

    async def take_idle(self, now: float, default_lifetime: float, holder: str,
                        lease: float) -> list[SessionRecord]:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "WITH expired AS MATERIALIZED (SELECT id FROM codebox_sessions "
                f"WHERE ({_IS_LIVE} AND last_used + coalesce(lifetime, %(default)s) < %(now)s) "
                "OR (status = %(stopping)s AND lease_until < %(now)s) "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE codebox_sessions s SET status = %(stopping)s, lease_holder = %(holder)s, "
                "lease_until = %(until)s FROM expired WHERE s.id = expired.id "
                f"RETURNING {', '.join('s.' + c for c in COLUMNS.split(', '))}",
                {"live": list(EXPIRING), "default": default_lifetime, "now": now,
                 "stopping": STOPPING, "holder": holder, "until": now + lease})
            rows = await cursor.fetchall()
        return [SessionRecord.from_row(row) for row in rows]

    async def take_pausable(self, now: float, idle: float, holder: str,
                            lease: float) -> list[SessionRecord]:
        async with self._transaction() as conn:
            for stale, back in ((PAUSING, RUNNING), (RESUMING, PAUSED)):
                await conn.execute(
                    "UPDATE codebox_sessions SET status = %s, lease_holder = NULL, "
                    "lease_until = NULL WHERE status = %s AND lease_until < %s",
                    (back, stale, now))
            cursor = await conn.execute(
                "WITH idle AS MATERIALIZED (SELECT id FROM codebox_sessions "
                "WHERE status = %(running)s AND kernel_id IS NOT NULL "
                "AND last_used + %(idle)s < %(now)s FOR UPDATE SKIP LOCKED) "
                "UPDATE codebox_sessions s SET status = %(pausing)s, lease_holder = %(holder)s, "
                "lease_until = %(until)s FROM idle WHERE s.id = idle.id "
                f"RETURNING {', '.join('s.' + c for c in COLUMNS.split(', '))}",
                {"running": RUNNING, "idle": idle, "now": now, "pausing": PAUSING,
                 "holder": holder, "until": now + lease})
            rows = await cursor.fetchall()
        return [SessionRecord.from_row(row) for row in rows]

    async def _move(self, session_id: int, holder: str, source: str, target: str,
                    updates: str = "", params: dict[str, Any] | None = None,
                    lease: float | None = None) -> SessionRecord | None:
        """Move the session from ``source`` to ``target``: under ``holder``'s lease, or
        (``lease``) giving ``holder`` one."""
        held = "" if lease is not None else " AND lease_holder = %(holder)s"
        return await self._one(
            f"UPDATE codebox_sessions SET status = %(target)s, lease_holder = %(new_holder)s, "
            f"lease_until = %(until)s{updates} WHERE id = %(id)s AND status = %(source)s{held} "
            f"{_RETURNING}",
            {"target": target, "source": source, "id": session_id, "holder": holder,
             "new_holder": holder if lease is not None else None,
             "until": time.time() + lease if lease is not None else None, **(params or {})})

    async def set_paused(self, session_id: int, holder: str, snapshot_id: str) -> bool:
        return await self._move(session_id, holder, PAUSING, PAUSED,
                                ", kernel_id = NULL, root = NULL, snapshot_id = %(snapshot)s",
                                {"snapshot": snapshot_id}) is not None

    async def release_pause(self, session_id: int, holder: str) -> None:
        await self._move(session_id, holder, PAUSING, RUNNING)

    async def take_resume(self, session_id: int, holder: str,
                          lease: float) -> SessionRecord | None:
        return await self._move(session_id, holder, PAUSED, RESUMING, lease=lease)

    async def release_resume(self, session_id: int, holder: str) -> None:
        await self._move(session_id, holder, RESUMING, PAUSED)

    async def add_snapshot(self, record: SnapshotRecord, quota: int) -> bool:
        async with self._transaction() as conn:
            # One key's snapshots are added one at a time (the quota holds across servers).
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (LOCK_CLASS, "snapshots:" + record.owner))
            cursor = await conn.execute("SELECT coalesce(sum(size), 0) FROM codebox_snapshots "
                                        "WHERE owner = %s", (record.owner,))
            row = await cursor.fetchone()
            if row is None or int(row[0]) + record.size > quota:
                return False
            await conn.execute(
                f"INSERT INTO codebox_snapshots ({_SNAPSHOT_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (record.id, record.owner, record.session_id, record.size, record.created,
                 record.location))
            return True

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"SELECT {_SNAPSHOT_COLUMNS} FROM codebox_snapshots WHERE id = %s",
                (snapshot_id,))
            row = await cursor.fetchone()
        return SnapshotRecord(*row) if row else None

    async def snapshot_usage(self, owner: str) -> int:
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT coalesce(sum(size), 0) FROM codebox_snapshots "
                                        "WHERE owner = %s", (owner,))
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def remove_snapshot(self, snapshot_id: str) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute("DELETE FROM codebox_snapshots WHERE id = %s",
                                        (snapshot_id,))
            return cursor.rowcount == 1

    async def close(self) -> None:
        await self._pool.close()
