"""`SqliteSessionStore`: the per-key limit, culling and the kernel of a session hold when
several stores (as several servers would) use one database file at once."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from codebox.server.store import SqliteSessionStore


@pytest.fixture()
def path(tmp_path):
    return tmp_path / "sessions.sqlite3"


@pytest.fixture()
def stores(path):
    """Makes ``n`` stores on one file, as ``n`` servers would have (closed afterwards)."""
    made: list[SqliteSessionStore] = []

    def make(n):
        made.extend(SqliteSessionStore(path) for _ in range(n))
        return made[-n:]

    yield make
    for store in made:
        store.close()


def test_a_session_round_trips_and_survives_reopening(path):
    store = SqliteSessionStore(path)
    record = store.reserve("owner", 5, env={"A": "1"})
    assert record is not None and record.kernel_id is None and record.env == {"A": "1"}
    assert store.set_kernel(record.id, "kernel-1", "/root/dir")
    store.close()
    again = SqliteSessionStore(path)
    got = again.get(record.id)
    assert (got.owner, got.kernel_id, got.root, got.env) == ("owner", "kernel-1", "/root/dir",
                                                              {"A": "1"})
    assert again.count() == again.count("owner") == 1 and again.count("other") == 0
    assert again.remove(record.id) and not again.remove(record.id)
    assert again.get(record.id) is None
    assert not again.set_kernel(record.id, "kernel-2", None)
    again.close()


def test_ids_are_large_random_and_distinct():
    store = SqliteSessionStore(":memory:")
    ids = {store.reserve("o", 1000).id for _ in range(200)}
    assert len(ids) == 200 and all(0 < i < 2**53 for i in ids)
    assert max(ids) > 2**40  # not a counter


def test_the_per_owner_limit_holds_across_stores_racing(stores):
    stores = stores(4)
    results: list = []
    barrier = threading.Barrier(8)

    def reserve(store):
        barrier.wait()
        results.append(store.reserve("owner", 3))

    threads = [threading.Thread(target=reserve, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r is not None for r in results) == 3
    assert stores[0].count("owner") == 3
    assert stores[1].reserve("someone else", 3) is not None


def test_each_idle_session_is_taken_by_one_store(stores):
    one, two = stores(2)
    records = [one.reserve("o", 100) for _ in range(20)]
    used = records[0]
    one.touch({used.id: used.last_used + 1000})  # in use: not idle
    taken: list[list] = [[], []]
    barrier = threading.Barrier(2)

    def cull(i, store):
        barrier.wait()
        taken[i] = store.take_idle(used.last_used + 500)

    threads = [threading.Thread(target=cull, args=(i, s)) for i, s in enumerate((one, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [r.id for r in taken[0] + taken[1]]
    assert sorted(ids) == sorted(r.id for r in records[1:])  # each once, the used one kept
    assert one.count() == 1 and two.get(used.id) is not None


def test_touch_never_moves_last_used_back():
    store = SqliteSessionStore(":memory:")
    record = store.reserve("o", 1)
    store.touch({record.id: record.last_used + 10})
    store.touch({record.id: record.last_used + 5})
    assert store.get(record.id).last_used == record.last_used + 10


def test_a_database_from_a_newer_codebox_is_refused(path):
    SqliteSessionStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer codebox"):
        SqliteSessionStore(path)
