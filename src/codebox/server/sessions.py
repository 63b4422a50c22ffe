"""The sessions of the server: one `LocalBox` each, on one shared Kernel Gateway.

`SessionManager` starts, finds, stops and culls sessions, enforces the per-key limit, and
watches the gateway it spawned: a gateway that died is started again at once. A box whose
kernel went with it notices by itself at its next operation, starts a fresh kernel (in the
same directory) and says once that its state is gone.

The sessions themselves are records in a `SessionStore`; the manager keeps a box for each
session it serves. With ``gateway_url`` and ``data_dir`` the store is a SQLite file in the
data directory: the kernels live on the gateway, so the sessions survive a restart of the
server, and every server on that directory serves all of them. With a data directory but
a spawned gateway, the store is a file there too: kernels die with the server, but its
paused sessions and its snapshots outlive it. Otherwise the store is in memory, and the
server stops every kernel of its sessions when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import CodeBoxError
from ..local import LocalBox, _boxdisk
from ..local._gateway import shared_gateway
from ..settings import CodeBoxSettings
from ..templates import Template
from . import datadir, kernel_users, pausing
from ._sqlite import SqliteSessionStore
from .settings import ServerSettings
from .store import (
    PAUSED,
    PAUSING,
    RESUMING,
    SessionRecord,
    SessionStore,
    StoreUnavailable,
    open_store,
    redacted,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_TIMEOUT = 15.0
"""Seconds one session may take to stop (its kernel deleted) before we move on."""

STORE_FILE = "sessions.sqlite3"

STOP_LEASE = 4 * STOP_TIMEOUT
"""Seconds a server holds an expired session to stop it; past them (the server died
meanwhile) another server takes it over."""


class SessionNotFound(CodeBoxError):
    """No session with that id belongs to the caller's key."""


class TooManySessions(CodeBoxError):
    """The caller's key holds as many sessions as it may."""


def owner_of(api_key: str) -> str:
    """What a session records of the key that started it: a digest, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(eq=False)
class Session:
    """One session as this server serves it: its id, the digest of its owner's key, its
    box, its bookkeeping (``kernel_id`` as the store has it)."""

    id: int
    owner: str
    box: LocalBox
    directory: Path | None
    kernel_id: str | None = None
    last_used: float = field(default_factory=time.time)  # wall clock: shared with others
    recorded_use: float = 0.0  # the last `last_used` written to the store
    busy: int = 0
    closed: bool = False
    env: dict[str, str] = field(default_factory=dict)
    template: Template | None = None

    def touch(self) -> None:
        self.last_used = time.time()


class SessionManager:
    """Every session of the server, and the gateway they share.

    Args:
        settings: The server's settings.
        box_settings: The settings each session's `LocalBox` takes.
    """

    def __init__(self, settings: ServerSettings, box_settings: CodeBoxSettings) -> None:
        self.settings = settings
        self.box_settings = box_settings
        self.gateway_url = settings.gateway_url or box_settings.gateway_url
        self.gateway_token = (
            settings.gateway_token if settings.gateway_token is not None
            else box_settings.gateway_token
        )
        self._sessions: dict[int, Session] = {}  # the sessions this server holds a box for
        # Who holds a lease in the store: names this server to the others (and to people).
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._store: SessionStore | None = None
        self._detaching: set[asyncio.Task[None]] = set()
        self._culling: set[asyncio.Task[None]] = set()
        self._holds_gateway = False
        self.templates: dict[str, Template] = {}  # the server's templates, by name
        self._gateway_lock = asyncio.Lock()
        self._housekeeper: asyncio.Task[None] | None = None
        self._own_data_dir = settings.data_dir is None
        self.data_dir = Path(settings.data_dir) if settings.data_dir else None
        if settings.kernel_user_per_key and self.spawns_gateway:
            raise ValueError("kernel users per key are for a gateway given by URL (Enterprise "
                             "Gateway): give --gateway-url")
        if settings.store is not None and self.spawns_gateway:
            raise ValueError("a shared session store (--store) needs kernels that other "
                             "servers reach too: give --gateway-url")
        if not self.persistent:
            self._store = SqliteSessionStore(":memory:")  # the file one waits for open()

    # -- lifetime ------------------------------------------------------------------------

    @property
    def spawns_gateway(self) -> bool:
        """Whether the sessions run on a gateway this server spawned (on this machine)."""
        return self.gateway_url is None

    @property
    def durable(self) -> bool:
        """Whether the sessions outlive this server: their kernels are on a gateway given
        by URL, and the store is a database given by the operator (``store``, or a file in
        the data directory)."""
        return self.gateway_url is not None and (
            not self._own_data_dir or self.settings.store is not None)

    @property
    def persistent(self) -> bool:
        """Whether the store outlives this server (durable sessions; else, with a data
        directory of the operator's, paused sessions and snapshots)."""
        return self.durable or not self._own_data_dir

    @property
    def store(self) -> SessionStore:
        assert self._store is not None, "the manager is not open"
        return self._store

    @property
    def upload_dir(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "uploads"

    async def open(self) -> None:
        """Make the data directories, spawn the gateway (unless one was given), and start
        the housekeeping (culling idle sessions, watching the gateway)."""
        if self.data_dir is None:
            self.data_dir = await asyncio.to_thread(datadir.make_temporary)
        # Owner only, all the way: what a box leaves in its directory is nobody else's.
        for path in (self.data_dir, self.data_dir / "sessions", self.upload_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.chmod(0o700)
        self.box_settings = self.box_settings.model_copy(
            update={"snapshot_dir": self.data_dir / pausing.SNAPSHOTS})
        if self.persistent:
            location = self.settings.store or str(self.data_dir / STORE_FILE)
            self._store = await open_store(location)
            if not self.durable:
                await self._forget_dead_kernels()
            log.info("sessions stored in %s (%d there now)", redacted(location),
                     await self.store.count())
        if self.spawns_gateway:
            if self.box_settings.sandbox:
                # Sandboxed kernels' own directories, on our disk: a session's files outlive
                # a gateway that dies (its box starts the next kernel in the same directory).
                boxes = self.data_dir / "boxes"
                boxes.mkdir(exist_ok=True, mode=0o700)
                # A killed server's boxes may still be mounted: unless another server on
                # this directory runs, none of their kernels lives (our gateway is new),
                # and their next kernels mount them again.
                if datadir.owner_alive(self.data_dir) is not True:
                    await asyncio.to_thread(_boxdisk.detach_all, str(boxes))
                datadir.claim(self.data_dir)
                self.box_settings = self.box_settings.model_copy(update={"sandbox_dir": boxes})
            await asyncio.to_thread(shared_gateway.acquire, self.box_settings)
            self._holds_gateway = True
            log.info("Kernel Gateway started (pid %s)", shared_gateway.pid)
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="codebox-housekeeping")

    async def close(self) -> None:
        """Stop every session (their kernels deleted) and the gateway; remove our files.
        Durable sessions are left running on their gateway, for the next server."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        await asyncio.gather(*self._culling)  # stops under way finish (each has a deadline)
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.closed = True
        if self.durable:
            await self._record_use(sessions)
            await asyncio.gather(*(s.box.adetach() for s in sessions), *self._detaching)
            log.info("%d session(s) kept on the gateway", await self.store.count())
        elif sessions:
            log.info("stopping %d session(s)", len(sessions))
            await asyncio.gather(*(self._stop_box(s) for s in sessions))
            if self.persistent:  # (paused ones stay, for the next server)
                for session in sessions:
                    await self.store.remove(session.id)
        if self._store is not None:
            await self._store.close()
        if self._holds_gateway:
            self._holds_gateway = False
            await asyncio.to_thread(shared_gateway.release)
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- sessions ------------------------------------------------------------------------

    async def total(self) -> int:
        """Sessions of every key, counting those being started."""
        return await self.store.count()

    async def count(self, owner: str) -> int:
        """Sessions held by ``owner``, counting those being started."""
        return await self.store.count(owner)

    async def _forget_dead_kernels(self) -> None:
        """(A store of a server that spawns its gateway:) the sessions of an earlier server
        whose kernels went with it are gone; its paused ones are kept."""
        for record in await self.store.sessions_of(None):
            if record.status in (PAUSED, RESUMING):
                continue
            await self.store.remove(record.id)
            if record.directory is not None:
                await asyncio.to_thread(shutil.rmtree, record.directory, True)

    async def create(self, owner: str, env: dict[str, str] | None = None,
                     lifetime: float | None = None, template: Template | None = None,
                     template_name: str | None = None,
                     snapshot: str | None = None) -> Session:
        """Start a session for ``owner``: a box with a running kernel (with ``env`` set in
        it), of ``template`` (the server's ``template_name``) if given, from the snapshot
        ``snapshot`` if given, that expires ``lifetime`` seconds after its last use (None:
        ``idle_timeout``).

        Raises:
            TooManySessions: ``owner`` holds ``max_sessions_per_key`` sessions already.
            CodeBoxError: The kernel could not be started.
        """
        limit = self.settings.max_sessions_per_key
        # The limit holds across servers: counting and recording are one transaction.
        record = await self.store.reserve(owner, limit, self._directory_for, dict(env or {}),
                                          lifetime=lifetime, template=template_name)
        if record is None:
            raise TooManySessions(
                f"this API key holds {limit} sessions, the most allowed: stop one first"
            )
        directory = Path(record.directory) if record.directory else None
        if directory is not None:
            directory.mkdir(mode=0o700)
        session = Session(record.id, owner,
                          self._new_box(directory, record.env, owner, template=template,
                                        snapshot=snapshot),
                          directory, busy=1,  # held: not culled while it starts
                          env=record.env, template=template)
        self._sessions[session.id] = session
        try:
            await session.box.astart()
            await self._record_kernel(session)
        except BaseException:
            await self.remove(session)
            raise
        finally:
            session.busy -= 1
        session.touch()  # idle from now on, however long the start took
        log.info("session %s started (kernel %s)", session.id, session.box.kernel_id)
        return session

    def _directory_for(self, session_id: int) -> str | None:
        if not self.spawns_gateway or self.box_settings.sandbox:
            return None  # a sandboxed kernel works in a directory of its own (and so pools)
        assert self.data_dir is not None
        return str(self.data_dir / "sessions" / str(session_id))

    def _new_box(self, directory: Path | None, env: dict[str, str], owner: str,
                 kernel_id: str | None = None, template: Template | None = None,
                 snapshot: str | None = None) -> LocalBox:
        return LocalBox(working_dir=directory, gateway_url=self.gateway_url,
                        gateway_token=self.gateway_token, kernel_id=kernel_id, env=env,
                        settings=kernel_users.settings_for(self.settings, self.box_settings,
                                                           owner),
                        template=template, snapshot=snapshot)

    async def start_from(self, record: SessionRecord, snapshot_id: str) -> Session:
        """The session of ``record`` on a new kernel started from ``snapshot_id`` (a
        paused session resumed under its own id); recorded ``running``."""
        directory = Path(record.directory) if record.directory else None
        if directory is not None:
            directory.mkdir(mode=0o700, exist_ok=True)
        old = self._sessions.get(record.id)
        if old is not None:
            self._forget(old)
        template = self.templates.get(record.template) if record.template else None
        box = self._new_box(directory, record.env, record.owner, template=template,
                            snapshot=snapshot_id)
        session = Session(record.id, record.owner, box, directory, busy=1,
                          recorded_use=record.last_used, env=record.env, template=template)
        self._sessions[record.id] = session
        try:
            await box.astart()
            # Resumed is used now, and written so before it is recorded running: its last
            # use before the pause would make it idle at once, to be paused again (by any
            # server) before the request that resumed it is done.
            await self._record_use([session])
            await self._record_kernel(session)
        except BaseException:
            session.closed = True
            if self._sessions.get(record.id) is session:
                del self._sessions[record.id]
            await self._stop_box(session)
            raise
        finally:
            session.busy -= 1
        return session

    def served(self, record: SessionRecord) -> Session:
        """This server's session of ``record``: adopted if it has none, or if its box is on
        another kernel than the store's (another server paused and resumed it)."""
        session = self._sessions.get(record.id)
        if session is not None and record.kernel_id not in (None, session.kernel_id):
            self._forget(session)
            session = None
        return session if session is not None else self._adopt(record)

    async def let_go(self, session: Session) -> None:
        """Stop ``session``'s box (kernel deleted, directory removed) but keep its record
        (it was paused)."""
        session.closed = True
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        await self._stop_box(session)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background transition (a pause) until it is over; `close` waits for it."""
        self._culling.add(task)
        task.add_done_callback(self._culling.discard)

    async def get(self, owner: str, session_id: int) -> Session:
        """The session ``session_id`` of ``owner``.

        Raises:
            SessionNotFound: There is none, or it belongs to another key.
        """
        record = await self.store.get(session_id)
        session = self._sessions.get(session_id)
        if record is None and session is not None and session.kernel_id is not None:
            self._forget(session)  # stopped or culled by another server
            session = None
        if record is None or not secrets.compare_digest(record.owner, owner):
            raise SessionNotFound(f"no session {session_id}")
        if record.status in (PAUSED, PAUSING, RESUMING):
            return await pausing.resume(self, record)
        if session is None:
            if record.kernel_id is None:  # another server is starting it
                raise SessionNotFound(f"no session {session_id}")
            session = self._adopt(record)
        elif (record.kernel_id not in (None, session.kernel_id) and not session.busy):
            # Another server replaced its kernel (the old one had vanished): a box on it.
            self._forget(session)
            session = self._adopt(record)
        return session

    async def paused(self, owner: str, session_id: int) -> SessionRecord | None:
        """The session ``session_id`` of ``owner`` if it is paused (or being paused or
        resumed), without resuming it; else None."""
        record = await self.store.get(session_id)
        if (record is None or not secrets.compare_digest(record.owner, owner)
                or record.status not in (PAUSED, PAUSING, RESUMING)):
            return None
        return record

    async def remove_paused(self, record: SessionRecord) -> None:
        """Stop a paused session: its record and its snapshot go."""
        if await self.store.remove(record.id):
            await pausing.drop_pause_snapshot(self, record)
            log.info("session %s stopped (it was paused)", record.id)

    def _adopt(self, record: SessionRecord) -> Session:
        """A box for a session this server has not served yet (started by an earlier
        server, or by another one on the same store), on the kernel the store names."""
        assert record.kernel_id is not None
        directory = Path(record.directory) if record.directory else None
        box = self._new_box(directory, record.env, record.owner, kernel_id=record.kernel_id)
        session = Session(record.id, record.owner, box, directory,
                          kernel_id=record.kernel_id, last_used=record.last_used,
                          recorded_use=record.last_used, env=record.env)
        self._sessions[record.id] = session
        return session

    def _forget(self, session: Session) -> None:
        """Drop this server's box of a session that is gone from the store (its kernel is
        someone else's to stop)."""
        session.closed = True
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        task = asyncio.get_running_loop().create_task(session.box.adetach())
        self._detaching.add(task)
        task.add_done_callback(self._detaching.discard)

    async def _record_kernel(self, session: Session) -> None:
        """Write the session's kernel to the store when it changed (started, replaced)."""
        kernel_id = session.box.kernel_id
        if kernel_id is None or kernel_id == session.kernel_id or session.closed:
            return
        await self.store.set_kernel(session.id, kernel_id, session.box.working_dir)
        session.kernel_id = kernel_id

    async def record_use(self) -> None:
        """Write when this server's sessions were last used (those in use: now)."""
        await self._record_use(list(self._sessions.values()))

    async def _record_use(self, sessions: list[Session], now: float | None = None) -> None:
        """Write when sessions were last used; those in use count as used ``now``."""
        now = time.time() if now is None else now
        used = {}
        for session in sessions:
            when = now if session.busy else session.last_used
            if when > session.recorded_use:
                used[session.id] = session.recorded_use = when
        if used:
            await self.store.touch(used)

    async def remove(self, session: Session) -> None:
        """Stop ``session``: its kernel deleted, its files removed."""
        session.closed = True
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        await self.store.remove(session.id)
        await self._stop_box(session)
        log.info("session %s stopped", session.id)

    async def _stop_box(self, session: Session) -> None:
        try:
            await asyncio.wait_for(session.box.astop(), STOP_TIMEOUT)
        except (TimeoutError, CodeBoxError, OSError) as exc:
            log.warning("session %s did not stop cleanly: %s", session.id, exc)
        if session.directory is not None:
            await asyncio.to_thread(shutil.rmtree, session.directory, True)

    @contextlib.asynccontextmanager
    async def use(self, session: Session, *, touch: bool = True) -> AsyncIterator[Session]:
        """Hold ``session`` for one request: it is not culled meanwhile. ``touch``: it
        counts as a use (a pause does not).

        Raises:
            SessionNotFound: The session was stopped meanwhile (by another request, or culled).
        """
        if session.closed:
            raise SessionNotFound(f"no session {session.id}")
        session.busy += 1
        if touch:
            session.touch()
        try:
            yield session
        finally:
            session.busy -= 1
            if touch:
                session.touch()
            await self._record_kernel(session)
            if self.durable:
                # Other servers cull by the store's time: it must not wait for housekeeping.
                await self._record_use([session])

    async def operate(self, session: Session, call: Callable[[], Awaitable[T]]) -> T:
        """Carry out ``call`` (an operation of the session's box) holding the session."""
        async with self.use(session):
            return await call()

    # -- the gateway -------------------------------------------------------------------

    async def check_gateway(self) -> None:
        """Start the spawned gateway again if it died (the boxes on it notice by themselves
        and start fresh kernels on the new one)."""
        if self._holds_gateway and shared_gateway.live_generation() is None:
            log.warning("the Kernel Gateway died: starting a new one; the sessions on it lost "
                        "their state")
            await asyncio.to_thread(shared_gateway.current, self.box_settings)

    # -- housekeeping --------------------------------------------------------------------

    def _housekeeping_interval(self) -> float:
        # A tick records the use of this server's busy sessions too: it must come often
        # enough that no other server finds one of them idle long enough to pause it.
        pause = self.settings.pause_idle
        return max(0.2, min(2.0, self.settings.idle_timeout / 4,
                            pause / 4 if pause is not None else 2.0))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_interval())
            try:
                await self.check_gateway()
                await self.cull()
                await pausing.pause_idle(self)
            except Exception:  # housekeeping must go on
                log.exception("housekeeping failed")

    async def cull(self) -> None:
        """Stop the sessions that expired (no request for their lifetime, by default
        ``idle_timeout`` seconds), on any server of the store: the store leases each expired
        session to one server, which stops it and then removes it.

        Their kernels are stopped in the background: housekeeping must go on recording the
        use of this server's busy sessions meanwhile, or another server would take them."""
        # One clock reading for both: a session in use here is used at exactly the time it
        # is judged by, so no lifetime, however short, stops it under its request.
        now = time.time()
        await self._record_use(list(self._sessions.values()), now)
        taken = await self.store.take_idle(now, self.settings.idle_timeout,
                                           self.server_id, STOP_LEASE)
        for record in taken:
            log.info("session %s unused for %g s: stopping it", record.id,
                     record.lifetime or self.settings.idle_timeout)
            session = self._sessions.pop(record.id, None)
            if session is None and record.kernel_id is not None:
                session = self._adopt(record)
                del self._sessions[record.id]
            if session is not None:
                session.closed = True
            task = asyncio.get_running_loop().create_task(self._expire(record, session))
            self._culling.add(task)
            task.add_done_callback(self._culling.discard)

    async def _expire(self, record: SessionRecord, session: Session | None) -> None:
        """Stop an expired session this server holds the lease of, then forget it (a
        session whose start never finished has no kernel: its server is gone)."""
        if session is not None:
            await self._stop_box(session)
        try:
            await self.store.remove(record.id)
        except StoreUnavailable as exc:  # its lease runs out: a server takes it again
            log.warning("session %s: could not remove it from the store: %s", record.id, exc)
            return
        await pausing.drop_pause_snapshot(self, record)  # (a paused one's)
