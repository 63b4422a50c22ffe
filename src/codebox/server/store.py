"""Where `codebox serve` keeps its sessions: the `SessionStore` seam, the records it holds,
and `open_store`, which picks an implementation from a location.

The store is the only state the servers share. A server keeps live connections to the
kernels of the sessions it served (a cache), but every decision that must hold across
servers is one transaction here: the per-key limit (`SessionStore.reserve`), who stops an
expired session (`SessionStore.take_idle` leases each to exactly one server), which kernel a
session is on, and when it expires (its ``lifetime`` after its last use; the server's idle
timeout when it has none).

Two implementations, one contract (tests/server/test_store_contract.py runs it on both):

- `SqliteSessionStore` (``codebox.server._sqlite``): one SQLite file, for the servers of one
  machine, and the in-memory store of a server whose sessions cannot outlive it.
- `PostgresSessionStore` (``codebox.server._postgres``): PostgreSQL, for servers on several
  machines (``--store postgresql://...``).

Every method is a coroutine and none blocks the event loop: SQLite's calls run on a thread
of the store's own, PostgreSQL's over psycopg's async connections.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import CodeBoxError

STARTING = "starting"
"""A session whose kernel is being started (no kernel id yet)."""
RUNNING = "running"
"""A session with a kernel."""
STOPPING = "stopping"
"""A session one server leased to stop it (expired): gone for every request."""
PAUSING = "pausing"
"""A session one server leased to pause it (snapshot it, then free its kernel)."""
PAUSED = "paused"
"""A session whose kernel was freed after a snapshot (``snapshot_id``)."""
RESUMING = "resuming"
"""A paused session one server leased to start it again from its snapshot."""

LIVE = (STARTING, RUNNING, PAUSING, PAUSED, RESUMING)
"""The states that count toward the per-key limit."""
EXPIRING = (STARTING, RUNNING, PAUSED)
"""The states in which a session expires (the others are held by a server's lease)."""

COLUMNS = ("id, owner, status, kernel_id, root, directory, env, template, lifetime, created, "
           "last_used, lease_holder, lease_until, snapshot_id")
"""The columns of a session row, in the order of `SessionRecord` (both stores)."""


class StoreUnavailable(CodeBoxError):
    """The session store cannot be reached or did not answer in time (HTTP 503)."""


@dataclass(frozen=True)
class SessionRecord:
    """What the store knows of one session. Times are wall-clock seconds (servers on
    several machines compare them)."""

    id: int
    owner: str  # digest of the API key that started it, never the key
    status: str
    kernel_id: str | None
    root: str | None  # the kernel's working directory
    directory: str | None  # the session's directory on the server's machine, if any
    env: dict[str, str]
    template: str | None
    lifetime: float | None  # seconds after the last use; None: the server's idle timeout
    created: float
    last_used: float
    lease_holder: str | None = None  # the server holding it for a transition (stopping)
    lease_until: float | None = None
    snapshot_id: str | None = None  # the snapshot a paused session resumes from

    @classmethod
    def from_row(cls, row: tuple[Any, ...] | list[Any]) -> SessionRecord:
        values = list(row)
        values[6] = json.loads(values[6]) if isinstance(values[6], str) else dict(values[6])
        return cls(*values)

    def expires(self, default_lifetime: float) -> float:
        """When the session expires if it is not used again (wall-clock seconds)."""
        return self.last_used + (self.lifetime if self.lifetime is not None
                                 else default_lifetime)


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot a key took (`codebox serve` keeps its content in its data directory)."""

    id: str
    owner: str  # digest of the API key that took it
    session_id: int | None
    size: int  # bytes: counts toward the key's quota
    created: float  # wall-clock seconds
    location: str  # its directory, relative to the data directory


class DirectoryFor(Protocol):
    def __call__(self, session_id: int) -> str | None: ...


class SessionStore(Protocol):
    """The sessions of every server sharing this store. Each method is one transaction."""

    async def reserve(self, owner: str, limit: int, directory_for: DirectoryFor | None = None,
                      env: dict[str, str] | None = None, *, template: str | None = None,
                      lifetime: float | None = None) -> SessionRecord | None:
        """Record a new session of ``owner`` (``starting``, no kernel yet) under a fresh,
        unguessable id, unless ``owner`` holds ``limit`` live sessions already (then None)."""

    async def get(self, session_id: int) -> SessionRecord | None:
        """The session, or None if there is none or it is being stopped."""

    async def sessions_of(self, owner: str | None) -> list[SessionRecord]:
        """Every session of ``owner`` (of everyone if None; those being started or stopped
        included), oldest first."""

    async def count(self, owner: str | None = None) -> int:
        """Live sessions of ``owner`` (of everyone if None), those starting included."""

    async def set_kernel(self, session_id: int, kernel_id: str, root: str | None) -> bool:
        """Record the session's kernel (it is then ``running``); False if the session is
        gone or being stopped."""

    async def set_lifetime(self, session_id: int, lifetime: float | None,
                           now: float) -> SessionRecord | None:
        """Give the session a lifetime (None: the server's idle timeout) and count ``now``
        as a use; the updated session, or None if it is gone or being stopped."""

    async def touch(self, used: dict[int, float]) -> None:
        """Record when sessions were last used (never moving ``last_used`` back)."""

    async def remove(self, session_id: int) -> bool:
        """Forget the session; True if this call removed it."""

    async def take_idle(self, now: float, default_lifetime: float, holder: str,
                        lease: float) -> list[SessionRecord]:
        """Lease to ``holder``, for ``lease`` seconds, the live sessions that expired by
        ``now`` and the ``stopping`` ones whose lease ran out (their server died while
        stopping them): each goes to one caller only, which stops its kernel and then
        `remove`\\s it. Returns them, marked ``stopping``."""

    async def take_pausable(self, now: float, idle: float, holder: str,
                            lease: float) -> list[SessionRecord]:
        """Lease to ``holder``, for ``lease`` seconds, the running sessions unused for
        ``idle`` seconds, each to one caller only, which snapshots it and then calls
        `set_paused` (or `release_pause`). Returns them, marked ``pausing``. Sessions whose
        pause or resume lease ran out (their server died) go back to ``running`` (their
        kernel was never freed) or ``paused`` (their snapshot is kept)."""

    async def set_paused(self, session_id: int, holder: str, snapshot_id: str) -> bool:
        """The session ``holder`` leased is ``paused`` on ``snapshot_id``, without a kernel;
        False if the lease is no longer ``holder``'s."""

    async def release_pause(self, session_id: int, holder: str) -> None:
        """The pause failed: the session ``holder`` leased is ``running`` again."""

    async def take_resume(self, session_id: int, holder: str,
                          lease: float) -> SessionRecord | None:
        """Lease the ``paused`` session to ``holder`` to resume it (marked ``resuming``);
        None if it is not paused (another server resumes it, or did). `set_kernel` ends
        the resume (``running``, no snapshot); `release_resume` gives up."""

    async def release_resume(self, session_id: int, holder: str) -> None:
        """The resume failed: the session ``holder`` leased is ``paused`` again."""

    async def add_snapshot(self, record: SnapshotRecord, quota: int) -> bool:
        """Record a snapshot of ``record.owner`` unless it would take the owner's snapshots
        past ``quota`` bytes (then False)."""

    async def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        """The snapshot, or None."""

    async def snapshot_usage(self, owner: str) -> int:
        """Bytes the snapshots of ``owner`` take."""

    async def remove_snapshot(self, snapshot_id: str) -> bool:
        """Forget the snapshot; True if this call removed it."""

    async def close(self) -> None:
        """Release the store's connections."""


def new_session_id() -> int:
    # Not guessable, and exact as a JSON number in every language (< 2**53).
    return secrets.randbelow(2**53 - 1) + 1


def is_postgres(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database (a ``postgresql://`` URL)."""
    return location.startswith(("postgresql://", "postgres://"))


def redacted(location: str) -> str:
    """``location`` without a password, for logs."""
    scheme, sep, rest = location.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return location
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else location


async def open_store(location: str | Path) -> SessionStore:
    """The store at ``location``: a ``postgresql://`` URL (libpq's form; the password may
    also come from ``PGPASSWORD`` or a password file), a ``sqlite:///`` URL or a file path,
    or ``":memory:"``.

    Raises:
        StoreUnavailable: The database cannot be reached.
        RuntimeError: It was written by a newer codebox.
    """
    text = str(location)
    if is_postgres(text):
        from ._postgres import PostgresSessionStore

        return await PostgresSessionStore.connect(text)
    from ._sqlite import SqliteSessionStore

    path = text.removeprefix("sqlite://") if text.startswith("sqlite:///") else text
    store = SqliteSessionStore(path)
    await store.open()
    return store
