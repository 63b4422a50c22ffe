"""The core of every box, under its public interface (`base.BaseBox`): what a backend
supplies (`BoxOps`, its transports, its side channel), how a call takes the box's lease and
hands its operation to the engine's sync or async runner, and how `stop` takes the box from
whoever holds it, with deadlines."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import _engine as engine
from ._engine import OnProgress, Op
from ._lease import Hold, Lease
from ._streams import raise_if_stopped_under
from .errors import CodeBoxError
from .schema import (
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    OutputChunk,
    Snapshot,
)
from .settings import CodeBoxSettings

if TYPE_CHECKING:
    from .base import BaseBox

logger = logging.getLogger(__name__)

OnOutput = Callable[[OutputChunk], Any]
"""Called with each chunk of output as it arrives."""

STOP_DEADLINE = 10.0
"""Seconds `stop` waits for an operation it revoked to let go, after the interrupt, before
taking the box from it (its further requests are refused then)."""

T = TypeVar("T")


def _close_elsewhere(transport: engine.AsyncTransport) -> None:
    """Close an async transport from blocking code: on its loop if that runs (in another
    thread), here if it is idle; a closed loop took the connections with it."""
    transport.abort()
    loop = transport.loop
    if loop.is_closed():
        return
    if loop.is_running():
        loop.call_soon_threadsafe(lambda: loop.create_task(transport.aclose()))
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop.run_until_complete(transport.aclose())


class BoxOps(Protocol):
    """What a backend does, as operations for the engine (`_engine.Op`); arguments come
    checked. Only `status` is no operation: it answers from what the box knows, no I/O."""

    def status(self) -> CodeBoxStatus: ...
    def start(self) -> Op[CodeBoxStatus]: ...
    def stop(self) -> Op[CodeBoxStatus]: ...
    def run(self, code: str, timeout: float | None, streaming: bool) -> Op[CodeBoxOutput]: ...
    def restart(self) -> Op[CodeBoxStatus]: ...
    def install(self, names: tuple[str, ...], timeout: float) -> Op[CodeBoxStatus]: ...
    def upload(self, name: str, data: bytes | memoryview, timeout: float,
               on_progress: OnProgress | None) -> Op[CodeBoxFile]: ...
    def download(self, name: str, timeout: float,
                 on_progress: OnProgress | None) -> Op[CodeBoxFile]: ...
    def read(self, name: str, timeout: float) -> Op[None]: ...
    def list_files(self) -> Op[list[CodeBoxFile]]: ...
    def remove(self, path: str) -> Op[CodeBoxStatus]: ...
    def rename(self, source: str, destination: str) -> Op[CodeBoxFile]: ...
    def make_dir(self, path: str) -> Op[CodeBoxFile]: ...
    def exists(self, path: str) -> Op[bool]: ...
    def file_info(self, path: str) -> Op[CodeBoxFile]: ...
    def shell(self, command: str | list[str], timeout: float | None, cwd: str | None,
              env: dict[str, str], streaming: bool) -> Op[CommandResult]: ...
    def set_lifetime(self, seconds: float | None) -> Op[datetime | None]: ...
    def snapshot(self) -> Op[Snapshot]: ...


class BoxCore(abc.ABC):
    """The lease, the transports and the stopping of a box (see the module)."""

    settings: CodeBoxSettings

    def __init__(self, *, settings: CodeBoxSettings | None = None) -> None:
        self.settings = settings if settings is not None else CodeBoxSettings()
        self._lease = Lease(grace=self.settings.timeout, interrupt=self._side_interrupt)
        self._sync_transport: engine.Transport | None = None
        self._async_transport: engine.AsyncTransport | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    # -- what a backend supplies --------------------------------------------------------

    @property
    @abc.abstractmethod
    def _ops(self) -> BoxOps:
        """The backend's operations."""

    @abc.abstractmethod
    def _new_transport(self) -> engine.Transport:
        """A transport with blocking I/O."""

    @abc.abstractmethod
    def _new_atransport(self) -> engine.AsyncTransport:
        """A transport on the running event loop."""

    @abc.abstractmethod
    def _side_interrupt(self) -> None:
        """Interrupt the running code over a channel no operation shares (blocking; any
        thread).

        Raises:
            CodeBoxError: The interrupt could not be sent.
        """

    def _side_stop(self) -> bool:
        """Stop the box over the side channel while an operation holds it, where the other
        end then ends that operation itself (a server stops its session: the run in progress
        gets its answer at once). Whether it did; by default nothing is sent."""
        return False

    def _stop_grace(self) -> float:
        """Seconds `stop` lets an interrupted operation end by itself."""
        return self.settings.interrupt_timeout

    def _stopped(self) -> None:
        """Called once a stop is over (release what the box holds in this process)."""
        return

    def _used(self) -> None:
        """Called as each call begins and ends (a box with a lifetime counts its uses)."""
        return

    async def _aprepare(self) -> None:
        """Called before each async call: slow blocking work the first call needs (a
        template's build) is done here, off the event loop."""
        return

    def _fork_box(self, snapshot: Snapshot) -> BaseBox:
        """A new box of the same kind and options as this one, started from ``snapshot``
        (not started yet)."""
        raise NotImplementedError(f"{type(self).__name__} cannot fork")

    def _drop_snapshot(self, snapshot: Snapshot) -> None:
        """Remove a snapshot this box took for a fork (blocking)."""
        return

    async def _adrop_snapshot(self, snapshot: Snapshot) -> None:
        """Async version of `_drop_snapshot`."""
        return

    # -- transports and the lease -----------------------------------------------------------

    def _transport(self) -> engine.Transport:
        """The box's blocking transport (under the lease). The async one, if open, lets go
        of its connection: one connection at a time, so none piles up unread output."""
        if self._async_transport is not None:
            self._async_transport.abort()
        if self._sync_transport is None:
            self._sync_transport = self._new_transport()
        return self._sync_transport

    def _atransport(self) -> engine.AsyncTransport:
        """The box's transport on the running loop (under the lease); made anew on another
        loop (the old one's connections went, or go, with their loop)."""
        loop = asyncio.get_running_loop()
        if self._sync_transport is not None:
            self._sync_transport.abort()
        if self._async_transport is None or self._async_loop is not loop:
            if self._async_transport is not None:
                self._async_transport.abort()
            self._async_transport, self._async_loop = self._new_atransport(), loop
        return self._async_transport

    def _call(self, op: Op[T], on_output: OnOutput | None = None, *,
              interruptible: bool = False, use: bool = True) -> T:
        hold = self._lease.acquire(interruptible=interruptible)
        with self._holding(hold, use):
            transport = self._transport()
            hold.abort = transport.abort
            return engine.run(op, transport, on_output, self._lease.guard(hold))

    async def _acall(self, op: Op[T], on_output: OnOutput | None = None, *,
                     interruptible: bool = False, use: bool = True) -> T:
        await self._aprepare()
        hold = await self._lease.aacquire(interruptible=interruptible)
        with self._holding(hold, use):
            transport = self._atransport()
            hold.abort = transport.abort
            return await engine.arun(op, transport, on_output, self._lease.guard(hold))

    @contextlib.contextmanager
    def _holding(self, hold: Hold, use: bool) -> Iterator[None]:
        """One call under ``hold``: a use as it begins and ends (if it is one), the lease
        let go at the end, and a failure a stop caused said as such."""
        if use:
            self._used()
        try:
            yield
        except CodeBoxError as exc:
            raise_if_stopped_under(hold, exc)
            raise
        finally:
            if use:
                self._used()
            self._lease.release(hold)

    # -- stopping ---------------------------------------------------------------------

    def _stop(self) -> CodeBoxStatus:
        """`BaseBox.stop`: take the box from whoever holds it, then stop it."""
        self._lease.reclaim()
        victim, turn = self._lease.revoke()
        try:
            self._take_from(victim, turn)
            hold = turn.hold
            assert hold is not None
            return engine.run(self._ops.stop(), self._transport(), None, self._lease.guard(hold))
        finally:
            self._close_transports()
            self._stopped()
            self._lease.end_stop(turn)

    async def _astop_now(self) -> CodeBoxStatus:
        await self._lease.areclaim()
        victim, turn = self._lease.revoke()
        try:
            await asyncio.to_thread(self._take_from, victim, turn)
            hold = turn.hold
            assert hold is not None
            transport = self._atransport()
            try:
                return await engine.arun(self._ops.stop(), transport, None,
                                         self._lease.guard(hold))
            finally:
                self._async_transport = None
                await transport.aclose()
        finally:
            self._close_transports()
            self._stopped()
            self._lease.end_stop(turn)

    def _take_from(self, victim: Hold | None, turn: Any) -> None:
        """Wait (blocking, with deadlines) for the stop's turn: the operation in progress is
        interrupted, its connection cut if it does not let go, and at last the box is taken
        from it."""
        if victim is not None:
            ended = self._side_stop()
            if ended or victim.interruptible:
                if not ended and self._lease.may_interrupt(victim):  # (not twice in a row)
                    try:
                        self._side_interrupt()
                    except CodeBoxError as exc:
                        logger.info("%r: stop could not interrupt the run: %s", self, exc)
                if self._await_turn(turn, victim, self._stop_grace()):
                    return
            if victim.abort is not None:
                victim.abort()
        if self._await_turn(turn, victim, STOP_DEADLINE):
            return
        if not self._lease.force(turn):
            raise CodeBoxError("stop() was given up while it waited")
        logger.warning("%r: an operation did not let go of the box within %.0f s; the stop "
                       "took it", self, STOP_DEADLINE)

    def _await_turn(self, turn: Any, victim: Hold | None, seconds: float) -> bool:
        """Wait up to ``seconds`` for the stop's turn; a revoked stream lets go of the box
        as soon as nobody reads it (nothing else would make it)."""
        end = time.monotonic() + seconds
        while True:
            if victim is not None:
                self._lease.let_go_idle(victim)
            left = end - time.monotonic()
            if self._lease.wait_stop(turn, min(0.05, max(0.0, left))) or left <= 0:
                return turn.hold is not None

    def _stop_if_idle(self, still: Callable[[], bool]) -> bool | None:
        """Stop the box if nobody holds or waits for it right now and ``still()`` says to
        (a lifetime that ran out): True if stopped, False if ``still()`` said no, None if
        the box is busy."""
        hold = self._lease.try_acquire("stop")
        if hold is None:
            return None
        try:
            if not still():
                return False
            engine.run(self._ops.stop(), self._transport(), None, self._lease.guard(hold))
            self._close_transports()
            self._stopped()
            return True
        finally:
            self._lease.release(hold)

    def _detach(self) -> None:
        """`BaseBox.detach`: close the connections under the lease."""
        hold = self._lease.acquire()
        try:
            self._close_transports()
        finally:
            self._lease.release(hold)

    async def _adetach(self) -> None:
        """`BaseBox.adetach`."""
        hold = await self._lease.aacquire()
        try:
            atransport = self._async_transport
            if atransport is not None and self._async_loop is asyncio.get_running_loop():
                self._async_transport = None
                await atransport.aclose()
            self._close_transports()
        finally:
            self._lease.release(hold)

    def _close_transports(self) -> None:
        """Close the box's connections (under the lease, or once it is stopped)."""
        sync, self._sync_transport = self._sync_transport, None
        atransport, self._async_transport = self._async_transport, None
        if atransport is not None:
            _close_elsewhere(atransport)
        if sync is not None:
            sync.close()

