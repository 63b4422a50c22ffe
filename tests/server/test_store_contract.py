"""The `SessionStore` contract, on SQLite and on a real PostgreSQL alike: the per-key limit,
leases (an expired session goes to exactly one server), lifetimes and lists hold when
several stores use one database at once, as several servers do."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator

import pytest

from codebox.server.store import (
    PAUSED,
    PAUSING,
    RESUMING,
    RUNNING,
    STARTING,
    STOPPING,
    SessionStore,
    SnapshotRecord,
    open_store,
)


@contextlib.asynccontextmanager
async def stores(location: str, n: int) -> AsyncIterator[list[SessionStore]]:
    """``n`` stores on one database, as ``n`` servers would have."""
    opened = [await open_store(location) for _ in range(n)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def test_a_session_round_trips_and_survives_reopening(store_location):
    async def scenario():
        async with stores(store_location, 1) as (store,):
            record = await store.reserve("owner", 5, env={"A": "1"}, template="data",
                                         lifetime=30)
            assert record is not None and record.kernel_id is None
            assert (record.status, record.env, record.template, record.lifetime) == (
                STARTING, {"A": "1"}, "data", 30.0)
            assert await store.set_kernel(record.id, "kernel-1", "/root/dir")
        async with stores(store_location, 1) as (again,):
            got = await again.get(record.id)
            assert (got.owner, got.status, got.kernel_id, got.root, got.env, got.template,
                    got.lifetime, got.created) == ("owner", "running", "kernel-1", "/root/dir",
                                                   {"A": "1"}, "data", 30.0, record.created)
            assert await again.count() == await again.count("owner") == 1
            assert await again.count("other") == 0
            assert await again.remove(record.id) and not await again.remove(record.id)
            assert await again.get(record.id) is None
            assert not await again.set_kernel(record.id, "kernel-2", None)
            assert await again.get(2**63) is None and await again.get(-1) is None

    asyncio.run(scenario())


def test_ids_are_large_random_and_distinct(store_location):
    async def scenario():
        async with stores(store_location, 1) as (store,):
            ids = {(await store.reserve("o", 1000)).id for _ in range(200)}
            assert len(ids) == 200 and all(0 < i < 2**53 for i in ids)
            assert max(ids) > 2**40  # not a counter

    asyncio.run(scenario())


def test_the_per_key_limit_holds_across_stores_racing(store_location):
    async def scenario():
        async with stores(store_location, 4) as four:
            for round_ in range(5):
                owner = f"owner-{round_}"
                results = await asyncio.gather(
                    *(four[i % 4].reserve(owner, 3) for i in range(12)))
                assert sum(r is not None for r in results) == 3, round_
                assert await four[0].count(owner) == 3
            assert await four[1].reserve("someone else", 3) is not None

    asyncio.run(scenario())


def test_each_expired_session_is_leased_to_one_store(store_location):
    async def scenario():
        async with stores(store_location, 3) as (one, two, three):
            records = [await one.reserve("o", 100) for _ in range(20)]
            used = records[0]
            await one.touch({used.id: used.last_used + 1000})  # in use: not expired
            now = used.last_used + 500
            taken = await asyncio.gather(*(s.take_idle(now, 100, f"server-{i}", 60)
                                           for i, s in enumerate((one, two, three))))
            ids = [r.id for batch in taken for r in batch]
            assert sorted(ids) == sorted(r.id for r in records[1:])  # each once
            for i, batch in enumerate(taken):
                assert all(r.status == STOPPING and r.lease_holder == f"server-{i}"
                           and r.lease_until == now + 60 for r in batch)
            # Leased sessions are gone for requests and for the limit, until removed...
            assert await two.get(records[1].id) is None and await one.count() == 1
            assert await three.get(used.id) is not None
            assert await one.take_idle(now + 59, 100, "late", 60) == []
            # ...and a lease whose server died before removing them runs out.
            again = await two.take_idle(now + 61, 100, "heir", 60)
            assert sorted(r.id for r in again) == sorted(r.id for r in records[1:])
            assert {r.lease_holder for r in again} == {"heir"}

    asyncio.run(scenario())


def test_stores_racing_to_take_one_session_give_it_to_one(store_location):
    async def scenario():
        async with stores(store_location, 4) as four:
            for _ in range(10):
                record = await four[0].reserve("o", 100)
                now = record.last_used + 10
                taken = await asyncio.gather(*(s.take_idle(now, 1, f"s{i}", 60)
                                               for i, s in enumerate(four)))
                assert sorted(len(batch) for batch in taken) == [0, 0, 0, 1]
                assert await four[1].remove(record.id)

    asyncio.run(scenario())


def test_lifetimes_decide_expiry_and_a_new_lifetime_counts_as_use(store_location):
    async def scenario():
        async with stores(store_location, 2) as (one, two):
            short = await one.reserve("o", 10, lifetime=5)
            default = await one.reserve("o", 10)
            long = await one.reserve("o", 10, lifetime=1000)
            t0 = max(r.last_used for r in (short, default, long))
            assert short.expires(100) == short.last_used + 5
            assert default.expires(100) == default.last_used + 100
            assert [r.id for r in await two.take_idle(t0 + 6, 100, "a", 60)] == [short.id]
            assert await two.remove(short.id)  # as the server that took it does
            assert [r.id for r in await two.take_idle(t0 + 101, 100, "a", 60)] == [default.id]
            assert await two.remove(default.id)
            # A lifetime set later: counted from that call, which is a use.
            changed = await two.set_lifetime(long.id, 20, t0 + 500)
            assert (changed.lifetime, changed.last_used) == (20.0, t0 + 500)
            assert await one.take_idle(t0 + 515, 100, "a", 60) == []
            back = await one.set_lifetime(long.id, None, t0 + 510)
            assert back.lifetime is None and back.expires(100) == t0 + 610
            assert await one.take_idle(t0 + 600, 100, "a", 60) == []
            assert [r.id for r in await one.take_idle(t0 + 611, 100, "a", 60)] == [long.id]
            assert await one.set_lifetime(long.id, 5, t0 + 700) is None  # being stopped
            with pytest.raises(ValueError, match="positive"):
                await one.reserve("o", 10, lifetime=0)
            with pytest.raises(ValueError, match="finite"):
                await one.set_lifetime(short.id, float("inf"), t0)

    asyncio.run(scenario())


def test_touch_never_moves_last_used_back_and_set_kernel_keeps_a_stopping_session(
        store_location):
    async def scenario():
        async with stores(store_location, 1) as (store,):
            record = await store.reserve("o", 1)
            await store.touch({record.id: record.last_used + 10})
            await store.touch({record.id: record.last_used + 5, 12345: 1.0})
            assert (await store.get(record.id)).last_used == record.last_used + 10
            (_taken,) = await store.take_idle(record.last_used + 100, 1, "me", 60)
            assert not await store.set_kernel(record.id, "k", None)
            (listed,) = await store.sessions_of("o")
            assert listed.status == STOPPING and listed.kernel_id is None

    asyncio.run(scenario())


def test_each_key_lists_its_own_sessions_oldest_first(store_location):
    async def scenario():
        async with stores(store_location, 2) as (one, two):
            mine = [await one.reserve("me", 10, lifetime=60) for _ in range(3)]
            await two.reserve("you", 10)
            await two.set_kernel(mine[1].id, "kernel", "/r")
            listed = await two.sessions_of("me")
            assert [r.id for r in listed] == [r.id for r in mine]
            assert [r.status for r in listed] == ["starting", "running", "starting"]
            assert await one.sessions_of("nobody") == []

    asyncio.run(scenario())


def test_concurrent_use_and_culling_never_deadlock(store_location):
    async def scenario():
        async with stores(store_location, 3) as three:
            records = [await three[0].reserve("o", 100) for _ in range(30)]
            ids = [r.id for r in records]
            rng = random.Random(7)

            async def server(store, i):
                for n in range(20):
                    chosen = rng.sample(ids, 10)
                    await store.touch({sid: time.time() + rng.random() for sid in chosen})
                    if n % 5 == i:
                        await store.take_idle(time.time(), 3600, f"s{i}", 60)

            await asyncio.wait_for(asyncio.gather(*(server(s, i) for i, s in enumerate(three))),
                                   60)
            assert await three[1].count() == 30

    asyncio.run(scenario())


def test_a_postgresql_written_by_a_newer_codebox_is_refused(postgres_url):
    import psycopg

    async def scenario():
        async with stores(postgres_url, 1):
            pass
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE codebox_meta SET value = '99' WHERE key = 'schema'")
        with pytest.raises(RuntimeError, match="newer codebox"):
            await open_store(postgres_url)

    asyncio.run(scenario())


def test_an_unreachable_postgresql_is_a_clear_error(tmp_path):
    from codebox.server._postgres import PostgresSessionStore
    from codebox.server.store import StoreUnavailable

    async def scenario():
        with pytest.raises(StoreUnavailable, match="cannot reach the session store"):
            await PostgresSessionStore.connect(
                f"postgresql://codebox:secret@/codebox?host={tmp_path}", timeout=1)

    asyncio.run(scenario())


def test_a_sqlite_file_of_the_first_schema_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE sessions (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, kernel_id TEXT,
                root TEXT, directory TEXT, env TEXT NOT NULL, created REAL NOT NULL,
                last_used REAL NOT NULL);
            INSERT INTO sessions VALUES (7, 'o', 'kernel-7', '/r', NULL, '{}', 1.0, 2.0);
            INSERT INTO sessions VALUES (8, 'o', NULL, NULL, NULL, '{}', 1.0, 2.0);
            PRAGMA user_version = 1;
        """)

    async def scenario():
        async with stores(str(path), 1) as (store,):
            seven, eight = await store.sessions_of("o")
            assert (seven.status, seven.kernel_id, seven.lifetime) == ("running", "kernel-7",
                                                                       None)
            assert eight.status == "starting"
            assert (await store.set_lifetime(7, 9, 3.0)).expires(100) == 12.0

    asyncio.run(scenario())
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer codebox"):
        asyncio.run(open_store(path))


def test_pause_and_resume_leases_go_to_one_store_and_come_back_when_they_run_out(
        store_location):
    async def scenario():
        async with stores(store_location, 2) as (one, two):
            record = await one.reserve("owner", 5)
            await one.set_kernel(record.id, "kernel-1", "/root")
            later = time.time() + 100
            taken = await asyncio.gather(one.take_pausable(later, 50, "one", 60),
                                         two.take_pausable(later, 50, "two", 60))
            assert sorted(len(t) for t in taken) == [0, 1]
            holder = "one" if taken[0] else "two"
            other = "two" if holder == "one" else "one"
            assert (await one.get(record.id)).status == PAUSING
            assert not await one.set_paused(record.id, other, "snap-x")  # not its lease
            assert await one.set_paused(record.id, holder, "snap-1")
            paused = await two.get(record.id)
            assert (paused.status, paused.kernel_id, paused.snapshot_id) == (
                PAUSED, None, "snap-1")
            assert await one.count("owner") == 1  # a paused session still counts
            resumes = await asyncio.gather(one.take_resume(record.id, "one", 60),
                                           two.take_resume(record.id, "two", 60))
            assert sum(r is not None for r in resumes) == 1
            assert (await one.get(record.id)).status == RESUMING
            assert await one.set_kernel(record.id, "kernel-2", "/root")
            running = await one.get(record.id)
            assert (running.status, running.kernel_id, running.snapshot_id) == (
                RUNNING, "kernel-2", None)
            # A server that died while pausing or resuming: its lease runs out, and the
            # session goes back to where it was.
            await one.touch({record.id: time.time()})
            assert await one.take_pausable(time.time() + 100, 50, "one", 1)
            assert not await two.take_pausable(time.time() + 100, 50, "two", 1)
            assert (await one.get(record.id)).status == PAUSING
            assert await two.take_pausable(time.time() + 102, 10**6, "two", 1) == []
            assert (await two.get(record.id)).status == RUNNING
            await one.release_pause(record.id, "nobody")
            assert (await one.get(record.id)).status == RUNNING

    asyncio.run(scenario())


def test_a_paused_session_expires_and_pausing_ones_do_not(store_location):
    async def scenario():
        async with stores(store_location, 1) as (store,):
            paused = await store.reserve("owner", 5, lifetime=10)
            await store.set_kernel(paused.id, "k", None)
            busy = await store.reserve("owner", 5, lifetime=10)
            await store.set_kernel(busy.id, "k2", None)
            now = time.time()
            assert {r.id for r in await store.take_pausable(now + 5, 1, "me", 600)} == {
                paused.id, busy.id}
            assert await store.set_paused(paused.id, "me", "snap")
            expired = await store.take_idle(now + 60, 3600, "me", 60)
            assert [r.id for r in expired] == [paused.id]
            assert expired[0].snapshot_id == "snap"

    asyncio.run(scenario())


def test_snapshots_hold_a_per_key_quota_across_stores_racing(store_location):
    async def scenario():
        async with stores(store_location, 3) as opened:
            records = [SnapshotRecord(f"{i:032x}", "owner", 1, 40, time.time(), f"s/{i}")
                       for i in range(9)]
            added = await asyncio.gather(*(opened[i % 3].add_snapshot(r, 100)
                                           for i, r in enumerate(records)))
            assert sum(added) == 2
            assert await opened[0].snapshot_usage("owner") == 80
            assert await opened[1].snapshot_usage("other") == 0
            kept = [r for r, ok in zip(records, added, strict=True) if ok]
            got = await opened[2].get_snapshot(kept[0].id)
            assert got == kept[0]
            assert await opened[0].add_snapshot(
                SnapshotRecord("f" * 32, "other", None, 100, 1.0, "s/o"), 100)
            assert await opened[1].remove_snapshot(kept[0].id)
            assert not await opened[2].remove_snapshot(kept[0].id)
            assert await opened[0].get_snapshot(kept[0].id) is None
            assert await opened[0].snapshot_usage("owner") == 40

    asyncio.run(scenario())
