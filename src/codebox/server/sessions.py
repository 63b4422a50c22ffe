"""The sessions of the server: one `LocalBox` each, on one shared Kernel Gateway.

`SessionManager` starts, finds, stops and culls sessions, enforces the per-key limit, and
watches the gateway it spawned: a gateway that died is started again, and the sessions
that had kernels on it are marked `Session.state_lost` until they have said so once.
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

from ..errors import CodeBoxError
from ..local import LocalBox
from ..local._gateway import shared_gateway
from ..settings import CodeBoxSettings
from . import datadir
from .settings import ServerSettings

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0
"""Seconds one session may take to stop (its kernel deleted) before we move on."""


class SessionNotFound(CodeBoxError):
    """No session with that id belongs to the caller's key."""


class TooManySessions(CodeBoxError):
    """The caller's key holds as many sessions as it may."""


def owner_of(api_key: str) -> str:
    """What a session records of the key that started it: a digest, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(eq=False)
class Session:
    """One session: its id, the digest of its owner's key, its box, its bookkeeping."""

    id: int
    owner: str
    box: LocalBox
    directory: Path | None
    generation: int
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    state_lost: bool = False
    closed: bool = False

    def touch(self) -> None:
        self.last_used = time.monotonic()


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
        self._sessions: dict[int, Session] = {}
        self._reserved: dict[str, int] = {}
        self._generation = 0
        self._holds_gateway = False
        self._gateway_lock = asyncio.Lock()
        self._housekeeper: asyncio.Task[None] | None = None
        self._own_data_dir = settings.data_dir is None
        self.data_dir = Path(settings.data_dir) if settings.data_dir else None

    # -- lifetime ------------------------------------------------------------------------

    @property
    def spawns_gateway(self) -> bool:
        """Whether the sessions run on a gateway this server spawned (on this machine)."""
        return self.gateway_url is None

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
        if self.spawns_gateway:
            address = await asyncio.to_thread(shared_gateway.acquire, self.box_settings)
            self._holds_gateway = True
            self._generation = address.generation
            log.info("Kernel Gateway started (pid %s)", shared_gateway.pid)
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="codebox-housekeeping")

    async def close(self) -> None:
        """Stop every session (their kernels deleted) and the gateway; remove our files."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.closed = True
        if sessions:
            log.info("stopping %d session(s)", len(sessions))
            await asyncio.gather(*(self._stop_box(s) for s in sessions))
        if self._holds_gateway:
            self._holds_gateway = False
            await asyncio.to_thread(shared_gateway.release)
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- sessions ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, owner: str) -> int:
        """Sessions held by ``owner``, counting those being started."""
        return sum(s.owner == owner for s in self._sessions.values()) + self._reserved.get(owner, 0)

    async def create(self, owner: str, env: dict[str, str] | None = None) -> Session:
        """Start a session for ``owner``: a box with a running kernel (with ``env`` set in
        it).

        Raises:
            TooManySessions: ``owner`` holds ``max_sessions_per_key`` sessions already.
            CodeBoxError: The kernel could not be started.
        """
        limit = self.settings.max_sessions_per_key
        if self.count(owner) >= limit:
            raise TooManySessions(
                f"this API key holds {limit} sessions, the most allowed: stop one first"
            )
        self._reserved[owner] = self._reserved.get(owner, 0) + 1
        try:
            await self.check_gateway()
            session_id = self._new_id()
            directory = None
            if self.spawns_gateway:
                assert self.data_dir is not None
                directory = self.data_dir / "sessions" / str(session_id)
                directory.mkdir(mode=0o700)
            box = LocalBox(
                working_dir=directory,
                gateway_url=self.gateway_url,
                gateway_token=self.gateway_token,
                env=env,
                settings=self.box_settings,
            )
            session = Session(session_id, owner, box, directory, self._generation)
            try:
                await box.astart()
            except BaseException:
                await self._stop_box(session)
                raise
            session.touch()  # idle from now on, however long the start took
            self._sessions[session_id] = session
        finally:
            self._reserved[owner] -= 1
            if not self._reserved[owner]:
                del self._reserved[owner]
        log.info("session %s started (kernel %s)", session_id, box.kernel_id)
        return session

    def _new_id(self) -> int:
        while True:
            # Not guessable, and exact as a JSON number in every language (< 2**53).
            candidate = secrets.randbelow(2**53 - 1) + 1
            if candidate not in self._sessions:
                return candidate

    def get(self, owner: str, session_id: int) -> Session:
        """The session ``session_id`` of ``owner``.

        Raises:
            SessionNotFound: There is none, or it belongs to another key.
        """
        session = self._sessions.get(session_id)
        if session is None or not secrets.compare_digest(session.owner, owner):
            raise SessionNotFound(f"no session {session_id}")
        return session

    async def remove(self, session: Session) -> None:
        """Stop ``session``: its kernel deleted, its files removed."""
        session.closed = True
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
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
        session.busy += 1
        session.touch()
        try:
            await self.check_gateway()
            if session.generation != self._generation:
                await self.reset(session)
            yield session
        finally:
            session.busy -= 1
            session.touch()

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
        """Stop the sessions that had no request for ``idle_timeout`` seconds."""
        limit = time.monotonic() - self.settings.idle_timeout
        idle = [s for s in self._sessions.values() if not s.busy and s.last_used < limit]
        for session in idle:
            log.info("session %s idle for %g s: stopping it", session.id,
                     self.settings.idle_timeout)
            await self.remove(session)
