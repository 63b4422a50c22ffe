"""The sessions of the server: one `LocalBox` each, on one shared Kernel Gateway.

`SessionManager` starts, finds, stops and culls sessions, enforces the per-key limit, and
watches the gateway it spawned: a gateway that died is started again, and the sessions
that had kernels on it are marked `Session.state_lost` until they have said so once.

The sessions themselves are records in a `SessionStore`; the manager keeps a box for each
session it serves. With ``gateway_url`` and ``data_dir`` the store is a SQLite file in the
data directory: the kernels live on the gateway, so the sessions survive a restart of the
server, and every server on that directory serves all of them. Otherwise the store is in
memory, and the server stops every kernel of its sessions when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .._tls import verify_for
from ..errors import CodeBoxError
from ..local import LocalBox
from ..local._gateway import shared_gateway
from ..settings import CodeBoxSettings
from . import datadir
from .settings import ServerSettings
from .store import SessionRecord, SessionStore, SqliteSessionStore

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0
"""Seconds one session may take to stop (its kernel deleted) before we move on."""

STORE_FILE = "sessions.sqlite3"

VERIFY_AFTER = 5.0
"""Seconds of quiet after which a session's kernel on a gateway given by URL is looked up
before the next request: a gateway that deleted or culled it meanwhile leaves our open
websocket silent, and a run on it would wait for its timeout."""


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
    generation: int
    kernel_id: str | None = None
    last_used: float = field(default_factory=time.time)  # wall clock: shared with others
    recorded_use: float = 0.0  # the last `last_used` written to the store
    busy: int = 0
    state_lost: bool = False
    closed: bool = False

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
        self._store: SessionStore | None = None
        self._detaching: set[asyncio.Task[None]] = set()
        self._culling: set[asyncio.Task[None]] = set()
        self._gateway_client: httpx.AsyncClient | None = None
        self._generation = 0
        self._holds_gateway = False
        self._gateway_lock = asyncio.Lock()
        self._housekeeper: asyncio.Task[None] | None = None
        self._own_data_dir = settings.data_dir is None
        self.data_dir = Path(settings.data_dir) if settings.data_dir else None
        if not self.durable:
            self._store = SqliteSessionStore(":memory:")  # the file one waits for open()

    # -- lifetime ------------------------------------------------------------------------

    @property
    def spawns_gateway(self) -> bool:
        """Whether the sessions run on a gateway this server spawned (on this machine)."""
        return self.gateway_url is None

    @property
    def durable(self) -> bool:
        """Whether the sessions outlive this server: their kernels are on a gateway given
        by URL, and the store is a file in a data directory given by the operator."""
        return self.gateway_url is not None and not self._own_data_dir

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
        if self.durable:
            self._store = SqliteSessionStore(self.data_dir / STORE_FILE)
            log.info("sessions stored in %s (%d there now)", self.data_dir / STORE_FILE,
                     self.store.count())
        if self.spawns_gateway:
            address = await asyncio.to_thread(shared_gateway.acquire, self.box_settings)
            self._holds_gateway = True
            self._generation = address.generation
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
            await asyncio.gather(*(s.box._adetach() for s in sessions), *self._detaching)
            log.info("%d session(s) kept on the gateway", self.store.count())
        elif sessions:
            log.info("stopping %d session(s)", len(sessions))
            await asyncio.gather(*(self._stop_box(s) for s in sessions))
        if self._store is not None:
            self._store.close()
        if self._gateway_client is not None:
            await self._gateway_client.aclose()
        if self._holds_gateway:
            self._holds_gateway = False
            await asyncio.to_thread(shared_gateway.release)
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- sessions ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.store.count()

    def count(self, owner: str) -> int:
        """Sessions held by ``owner``, counting those being started."""
        return self.store.count(owner)

    async def create(self, owner: str, env: dict[str, str] | None = None) -> Session:
        """Start a session for ``owner``: a box with a running kernel (with ``env`` set in
        it).

        Raises:
            TooManySessions: ``owner`` holds ``max_sessions_per_key`` sessions already.
            CodeBoxError: The kernel could not be started.
        """
        limit = self.settings.max_sessions_per_key
        # The limit holds across servers: counting and recording are one transaction.
        record = await asyncio.to_thread(self.store.reserve, owner, limit, self._directory_for,
                                         dict(env or {}))
        if record is None:
            raise TooManySessions(
                f"this API key holds {limit} sessions, the most allowed: stop one first"
            )
        directory = Path(record.directory) if record.directory else None
        if directory is not None:
            directory.mkdir(mode=0o700)
        session = Session(record.id, owner, self._new_box(directory, record.env), directory,
                          self._generation, busy=1)  # held: not culled while it starts
        self._sessions[session.id] = session
        try:
            await self.check_gateway()
            session.generation = self._generation
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
        if not self.spawns_gateway:
            return None
        assert self.data_dir is not None
        return str(self.data_dir / "sessions" / str(session_id))

    def _new_box(self, directory: Path | None, env: dict[str, str]) -> LocalBox:
        return LocalBox(working_dir=directory, gateway_url=self.gateway_url,
                        gateway_token=self.gateway_token, env=env, settings=self.box_settings)

    def get(self, owner: str, session_id: int) -> Session:
        """The session ``session_id`` of ``owner``.

        Raises:
            SessionNotFound: There is none, or it belongs to another key.
        """
        record = self.store.get(session_id)
        session = self._sessions.get(session_id)
        if record is None and session is not None and session.kernel_id is not None:
            self._forget(session)  # stopped or culled by another server
            session = None
        if record is None or not secrets.compare_digest(record.owner, owner):
            raise SessionNotFound(f"no session {session_id}")
        if session is None:
            if record.kernel_id is None:  # another server is starting it
                raise SessionNotFound(f"no session {session_id}")
            session = self._adopt(record)
        elif (record.kernel_id not in (None, session.kernel_id) and not session.busy):
            # Another server replaced its kernel (the old one had vanished).
            session.box._adopt(record.kernel_id, record.root)
            session.kernel_id = record.kernel_id
        return session

    def _adopt(self, record: SessionRecord) -> Session:
        """A box for a session this server has not served yet (started by an earlier
        server, or by another one on the same store), on the kernel the store names."""
        assert record.kernel_id is not None
        directory = Path(record.directory) if record.directory else None
        box = self._new_box(directory, record.env)
        box._adopt(record.kernel_id, record.root)
        session = Session(record.id, record.owner, box, directory, self._generation,
                          kernel_id=record.kernel_id, last_used=record.last_used,
                          recorded_use=record.last_used)
        self._sessions[record.id] = session
        return session

    def _forget(self, session: Session) -> None:
        """Drop this server's box of a session that is gone from the store (its kernel is
        someone else's to stop)."""
        session.closed = True
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        task = asyncio.get_running_loop().create_task(session.box._adetach())
        self._detaching.add(task)
        task.add_done_callback(self._detaching.discard)

    async def _record_kernel(self, session: Session) -> None:
        """Write the session's kernel to the store when it changed (started, replaced)."""
        kernel_id = session.box.kernel_id
        if kernel_id is None or kernel_id == session.kernel_id or session.closed:
            return
        await asyncio.to_thread(self.store.set_kernel, session.id, kernel_id,
                                session.box.working_dir)
        session.kernel_id = kernel_id

    async def _record_use(self, sessions: list[Session]) -> None:
        """Write when sessions were last used; those in use count as used now."""
        now = time.time()
        used = {}
        for session in sessions:
            when = now if session.busy else session.last_used
            if when > session.recorded_use:
                used[session.id] = session.recorded_use = when
        if used:
            await asyncio.to_thread(self.store.touch, used)

    async def remove(self, session: Session) -> None:
        """Stop ``session``: its kernel deleted, its files removed."""
        session.closed = True
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        await asyncio.to_thread(self.store.remove, session.id)
        await self._stop_box(session)
        log.info("session %s stopped", session.id)

    async def _stop_box(self, session: Session) -> None:
        try:
            await asyncio.wait_for(session.box.astop(), STOP_TIMEOUT)
        except (CodeBoxError, asyncio.TimeoutError, OSError) as exc:
            log.warning("session %s did not stop cleanly: %s", session.id, exc)
        if session.directory is not None:
            await asyncio.to_thread(shutil.rmtree, session.directory, True)

    @property
    def generation(self) -> int:
        """Changes each time the spawned gateway is started again."""
        return self._generation

    @contextlib.asynccontextmanager
    async def use(self, session: Session) -> AsyncIterator[Session]:
        """Hold ``session`` for one request: it is not culled meanwhile, and a session whose
        kernel was on a gateway that died lets go of it first (the next operation starts a
        fresh kernel; ``state_lost`` stays set until a run has reported it).

        Raises:
            SessionNotFound: The session was stopped meanwhile (by another request, or culled).
        """
        if session.closed:
            raise SessionNotFound(f"no session {session.id}")
        quiet = time.time() - session.last_used
        session.busy += 1
        session.touch()
        try:
            if quiet > VERIFY_AFTER and session.busy == 1:
                await self._check_kernel(session)
            await self.check_gateway()
            if session.generation != self._generation:
                await self.reset(session)
            yield session
        finally:
            session.busy -= 1
            session.touch()
            await self._record_kernel(session)
            if self.durable:
                # Other servers cull by the store's time: it must not wait for housekeeping.
                await self._record_use([session])

    async def _check_kernel(self, session: Session) -> None:
        """Let go of the session's connection if its kernel is gone from the gateway: the
        box then finds it gone, starts a fresh one and its next run says so, once."""
        kernel_id = session.box.kernel_id
        if self.gateway_url is None or kernel_id is None:
            return
        if self._gateway_client is None:
            headers = {"Authorization": f"token {self.gateway_token}"} if self.gateway_token else {}
            self._gateway_client = httpx.AsyncClient(
                base_url=self.gateway_url, headers=headers, trust_env=False,
                verify=verify_for(self.gateway_url), timeout=STOP_TIMEOUT)
        try:
            response = await self._gateway_client.get(f"/api/kernels/{kernel_id}")
        except httpx.HTTPError as exc:
            log.warning("session %s: cannot look up kernel %s: %s", session.id, kernel_id, exc)
            return  # the operation itself will say what is wrong
        if response.status_code == 404:
            log.warning("session %s: kernel %s is gone from the gateway", session.id,
                        kernel_id)
            root = session.box.working_dir
            await session.box._adetach()
            session.box._adopt(kernel_id, root)

    async def reset(self, session: Session) -> None:
        """Let go of the session's kernel (gone with its gateway): the next operation starts
        a fresh one in the same directory."""
        with contextlib.suppress(CodeBoxError, asyncio.TimeoutError, OSError):
            await asyncio.wait_for(session.box.astop(), STOP_TIMEOUT)
        session.generation = self._generation

    # -- the gateway -------------------------------------------------------------------

    async def check_gateway(self) -> None:
        """Start the spawned gateway again if it died, and mark the sessions whose kernels
        were on it as having lost their state."""
        if not self._holds_gateway:
            return
        if shared_gateway.live_generation() == self._generation:
            return  # the common case, answered without a thread
        async with self._gateway_lock:
            address = await asyncio.to_thread(shared_gateway.current, self.box_settings)
            if address.generation == self._generation:
                return
            log.warning("the Kernel Gateway died and was started again; the sessions on it "
                        "lost their state")
            self._generation = address.generation
            for session in self._sessions.values():
                if session.generation != address.generation:
                    session.state_lost = True

    # -- housekeeping --------------------------------------------------------------------

    def _housekeeping_interval(self) -> float:
        return max(0.2, min(2.0, self.settings.idle_timeout / 4))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_interval())
            try:
                await self.check_gateway()
                await self.cull()
            except Exception:  # housekeeping must go on
                log.exception("housekeeping failed")

    async def cull(self) -> None:
        """Stop the sessions that had no request for ``idle_timeout`` seconds, on any
        server of the store: each idle session is taken from the store by one server.

        Their kernels are stopped in the background: housekeeping must go on recording the
        use of this server's busy sessions meanwhile, or another server would take them."""
        await self._record_use(list(self._sessions.values()))
        before = time.time() - self.settings.idle_timeout
        for record in await asyncio.to_thread(self.store.take_idle, before):
            log.info("session %s idle for %g s: stopping it", record.id,
                     self.settings.idle_timeout)
            session = self._sessions.pop(record.id, None)
            if session is None:
                if record.kernel_id is None:
                    continue  # its start never finished (that server is gone)
                session = self._adopt(record)
                del self._sessions[record.id]
            session.closed = True
            task = asyncio.get_running_loop().create_task(self._stop_box(session))
            self._culling.add(task)
            task.add_done_callback(self._culling.discard)
