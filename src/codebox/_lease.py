"""Who holds a box: nobody, one operation (or open stream), or `stop`.

A box's connections carry one operation at a time. Every operation takes the box's `Lease`
first and gives it back when it ends; a stream holds it from its first chunk until it is
finished or closed. The lease is one lock that threads and event loops wait on alike,
first come first served: a thread blocks on an event, a task awaits a future that the
releasing side resolves on the task's own loop.

Two things never wait in line:
- an interrupt goes over a side channel that no operation shares (see `BaseBox`); the lease
  only counts interrupts in flight and is not handed on while one is, so an interrupt aimed
  at a run that is just ending can never land in the next operation;
- `stop` revokes the lease: the holder is marked revoked (its further requests are refused,
  see `_engine.Guard`), every waiter is told the box was stopped, and the stop is next.

A stream that nobody reads any more does not keep the box. The task or thread that opened
it takes the box back at its next call (the stream is closed first, properly). A stream that
was garbage-collected unclosed, or left unread for ``grace`` seconds while others wait, is
taken from it by the first waiter: its run is interrupted over the side channel, its
connection left to the next operation, which ignores what the interrupted run still says.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._engine import Interrupting, Revoked
from .errors import CodeBoxError

_RECHECK = 0.5
"""Seconds between a waiter's looks at a holder that may have been abandoned."""

INTERRUPT_SPACING = 1.0
"""Seconds within which a second interrupt of one operation is not sent: an IPython kernel
interrupted again while it winds the first interrupt down may lose its next request."""

STOPPED_WHILE_WAITING = "the box was stopped before this call could run"


def current_owner() -> Any:
    """Who is calling: the running asyncio task, else the thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return task if task is not None else threading.current_thread()


def _gone(owner: Any) -> bool:
    """Whether the task or thread that opened a stream has ended (it reads no more)."""
    if isinstance(owner, asyncio.Task):
        return owner.done()
    return isinstance(owner, threading.Thread) and not owner.is_alive()


def _left_by(holder: Hold, caller: Any) -> bool:
    """Whether ``holder`` is a stream its reader left: ``caller`` opened it (and is calling
    the box instead of reading), its opener ended, or it was garbage-collected."""
    if holder.kind != "stream" or holder.reading or holder.closing:
        return False
    return holder.abandoned or (not holder.revoked
                                and (holder.owner == caller or _gone(holder.owner)))


@dataclass(eq=False)
class Hold:
    """One holder of the lease.

    Attributes:
        kind: ``"op"``, ``"stream"`` or ``"stop"``.
        owner: The task or thread that took it (`current_owner`).
        interruptible: Whether an interrupt may end it (user code runs under it).
        revoked: The lease was taken from it: its requests are refused.
        closing: Its owner is closing it (a stream it left).
        reading: A stream's consumer is waiting for its next chunk right now.
        abandoned: Its stream was garbage-collected unclosed.
        since: When it was taken, or when its stream's last chunk was read.
        interrupted: When an interrupt was last sent to it (monotonic seconds).
        stream: A weak reference to its stream, if it is one.
        abort: Cuts its connection under whatever waits on it, from any thread.
    """

    kind: str
    owner: Any
    interruptible: bool = False
    revoked: bool = False
    closing: bool = False
    reading: bool = False
    abandoned: bool = False
    since: float = field(default_factory=time.monotonic)
    interrupted: float | None = None
    stream: weakref.ref[Any] | None = None
    abort: Callable[[], None] | None = None


class Waiter:
    """One caller in line: a thread's event and, for a task, a future on its loop."""

    __slots__ = ("error", "event", "future", "hold", "loop", "spec")

    def __init__(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop | None) -> None:
        self.spec = spec
        self.event = threading.Event()
        self.hold: Hold | None = None
        self.error: BaseException | None = None
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None

    @property
    def settled(self) -> bool:
        return self.hold is not None or self.error is not None

    def wake(self) -> None:
        """Tell the waiter to look again (it was handed the lease, failed, or poked)."""
        self.event.set()
        loop, future = self.loop, self.future
        if loop is not None and future is not None:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # its loop is closed: the waiter went with it

    def outcome(self) -> Hold:
        if self.error is not None:
            raise self.error
        assert self.hold is not None
        return self.hold


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Lease:
    """The lease of one box.

    Args:
        grace: Seconds a stream nobody reads may keep the box while others wait.
        interrupt: Sends an interrupt over the box's side channel (blocking).
    """

    def __init__(self, *, grace: float = 60.0,
                 interrupt: Callable[[], None] | None = None) -> None:
        self.grace = grace
        self._interrupt = interrupt
        self._mutex = threading.Lock()
        self._holder: Hold | None = None
        self._queue: collections.deque[Waiter] = collections.deque()
        self._interrupts = 0  # in flight: the lease is not handed on meanwhile
        self._stops = 0

    @property
    def holder(self) -> Hold | None:
        return self._holder

    @property
    def stopping(self) -> bool:
        """Whether a `stop` is under way."""
        return self._stops > 0

    def guard(self, hold: Hold) -> Callable[[Any], bool]:
        """The check each request of an operation passes: raises `Revoked` once ``hold``
        is no longer the box's holder; skips an interrupt too close to the last one."""

        def check(req: Any) -> bool:
            if hold.revoked or self._holder is not hold:
                raise Revoked("the box was stopped or taken over while this operation "
                              "ran; it may no longer use the box's connections")
            if isinstance(req, Interrupting):
                with self._mutex:
                    return self._mark_interrupt(hold)
            return True

        return check

    @staticmethod
    def _mark_interrupt(hold: Hold) -> bool:
        """Whether an interrupt may go to ``hold`` now (under the mutex); noted if so."""
        now = time.monotonic()
        if hold.interrupted is not None and now - hold.interrupted < INTERRUPT_SPACING:
            return False
        hold.interrupted = now
        return True

    # -- taking and giving back -----------------------------------------------------------

    def acquire(self, kind: str = "op", *, interruptible: bool = False) -> Hold:
        """Wait (blocking) until the box is this caller's.

        Raises:
            CodeBoxError: The box was stopped while the caller waited.
        """
        spec = {"kind": kind, "owner": current_owner(), "interruptible": interruptible}
        while True:
            waiter, left = self._enter(spec, None)
            if left is not None:
                self._take_back(left)
                continue
            assert waiter is not None
            try:
                while not waiter.settled:
                    waiter.event.wait(_RECHECK)
                    waiter.event.clear()
                    stale = self._stale(waiter)
                    if stale is not None:
                        self._take_back(stale)
            except BaseException:
                self._leave(waiter)
                raise
            return waiter.outcome()

    async def aacquire(self, kind: str = "op", *, interruptible: bool = False) -> Hold:
        """Async version of `acquire`."""
        spec = {"kind": kind, "owner": current_owner(), "interruptible": interruptible}
        loop = asyncio.get_running_loop()
        while True:
            waiter, left = self._enter(spec, loop)
            if left is not None:
                await self._atake_back(left)
                continue
            assert waiter is not None
            try:
                while not waiter.settled:
                    assert waiter.future is not None
                    try:
                        await asyncio.wait_for(asyncio.shield(waiter.future), _RECHECK)
                    except TimeoutError:
                        pass
                    if waiter.future.done():
                        waiter.future = loop.create_future()  # for the next poke
                    stale = self._stale(waiter)
                    if stale is not None:
                        await asyncio.to_thread(self._take_back, stale)
            except BaseException:
                self._leave(waiter)
                raise
            return waiter.outcome()

    def try_acquire(self, kind: str = "op") -> Hold | None:
        """The box, if it is free right now (nobody holds it or waits for it), else None."""
        with self._mutex:
            if self._holder is not None or self._queue or self._interrupts:
                return None
            self._holder = Hold(kind, current_owner())
            return self._holder

    def release(self, hold: Hold) -> None:
        """Give the box back (nothing happens if it was taken from ``hold`` already)."""
        with self._mutex:
            if self._holder is hold:
                self._holder = None
                self._pass_on()

    def abandon(self, hold: Hold) -> None:
        """``hold``'s stream was garbage-collected unclosed: the first waiter, or the next
        caller, takes the box back. No I/O here (called from a finalizer). Revoked at once:
        its generator, closed after this, must not unwind with I/O of its own (that would
        race the one who takes the box back)."""
        hold.abandoned = hold.revoked = True
        with self._mutex:
            if self._holder is hold and self._queue:
                self._queue[0].wake()

    # -- interrupts ---------------------------------------------------------------------------

    def begin_interrupt(self) -> Hold | None:
        """The interruptible holder an interrupt is about to be sent to (the lease is not
        handed on until `end_interrupt`), or None: nothing runs that an interrupt ends."""
        with self._mutex:
            hold = self._holder
            if (hold is None or not hold.interruptible or hold.revoked
                    or not self._mark_interrupt(hold)):
                return None
            self._interrupts += 1
            return hold

    def may_interrupt(self, hold: Hold) -> bool:
        """Whether an interrupt may go to ``hold`` now (noted if so): not twice within
        `INTERRUPT_SPACING`."""
        with self._mutex:
            return self._mark_interrupt(hold)

    def end_interrupt(self) -> None:
        with self._mutex:
            self._interrupts -= 1
            self._pass_on()

    # -- stop ---------------------------------------------------------------------------------

    def reclaim(self) -> None:
        """Take the box back from a stream the caller left, as its next call would (a stop
        does this first: the caller's own stream is closed properly, not revoked)."""
        with self._mutex:
            holder = self._holder
            if holder is None or not _left_by(holder, current_owner()):
                return
            holder.closing = True
        self._take_back(holder)

    async def areclaim(self) -> None:
        """Async version of `reclaim`."""
        with self._mutex:
            holder = self._holder
            if holder is None or not _left_by(holder, current_owner()):
                return
            holder.closing = True
        await self._atake_back(holder)

    def revoke(self) -> tuple[Hold | None, Waiter]:
        """Begin a stop: the holder (returned, unless it is another stop) is revoked, every
        waiter but another stop's fails, and this stop is next in line (its waiter,
        returned: see `wait_stop`, `force`, `end_stop`)."""
        spec = {"kind": "stop", "owner": current_owner(), "interruptible": False}
        stop = Waiter(spec, None)
        with self._mutex:
            self._stops += 1
            victim = self._holder
            if victim is not None and victim.kind == "stop":
                victim = None
            if victim is not None:
                victim.revoked = True
            stops = [w for w in self._queue if w.spec["kind"] == "stop"]
            for waiter in self._queue:
                if waiter.spec["kind"] != "stop":
                    waiter.error = CodeBoxError(STOPPED_WHILE_WAITING)
                    waiter.wake()
            self._queue.clear()
            self._queue.extend([*stops, stop])
            self._pass_on()
        return victim, stop

    def let_go_idle(self, victim: Hold) -> None:
        """Free the lease from a revoked stream that nobody is reading: nothing drives it
        to let go by itself (its reader, if it comes back, finds it taken)."""
        with self._mutex:
            if self._holder is victim and victim.kind == "stream" and not victim.reading:
                self._holder = None
                self._pass_on()

    def wait_stop(self, stop: Waiter, seconds: float) -> bool:
        """Wait (blocking) up to ``seconds`` for the stop's turn; whether it came."""
        end = time.monotonic() + seconds
        while stop.hold is None and (left := end - time.monotonic()) > 0:
            stop.event.wait(left)
            stop.event.clear()
        return stop.hold is not None

    def force(self, stop: Waiter) -> bool:
        """Give the stop the lease now, taking it from a holder that did not let go in time
        (its further requests are refused); False if the stop was given up meanwhile."""
        with self._mutex:
            if stop.hold is None:
                if stop not in self._queue:
                    return False
                if self._holder is not None:
                    self._holder.revoked = True
                    self._holder = None
                self._queue.remove(stop)
                self._queue.appendleft(stop)
                self._pass_on(force=True)
            return stop.hold is not None

    def end_stop(self, stop: Waiter) -> None:
        """The stop is over (done, failed or given up): the lease goes on."""
        with self._mutex:
            self._stops -= 1
            if stop in self._queue:
                self._queue.remove(stop)
            elif stop.hold is not None and self._holder is stop.hold:
                self._holder = None
            self._pass_on()

    # -- the insides ----------------------------------------------------------------------------

    def _enter(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop | None
               ) -> tuple[Waiter, None] | tuple[None, Hold]:
        """Join the line (taking the lease at once if it is free), or name the stream to
        take the box back from first: the caller's own (it left it), or one collected."""
        with self._mutex:
            holder = self._holder
            if holder is not None and _left_by(holder, spec["owner"]):
                holder.closing = True
                return None, holder
            waiter = Waiter(spec, loop)
            self._queue.append(waiter)
            self._pass_on()
            return waiter, None

    def _pass_on(self, *, force: bool = False) -> None:
        """Hand the free lease to the first waiter (under the mutex)."""
        if self._holder is not None or (self._interrupts and not force):
            return
        while self._queue:
            waiter = self._queue.popleft()
            if waiter.error is not None:
                continue
            hold = Hold(**waiter.spec)
            waiter.hold = self._holder = hold
            waiter.wake()
            return

    def _leave(self, waiter: Waiter) -> None:
        """A waiter gave up (cancelled, interrupted): out of line, or it gives back what it
        was handed meanwhile."""
        with self._mutex:
            if waiter in self._queue:
                self._queue.remove(waiter)
            elif waiter.hold is not None and self._holder is waiter.hold:
                self._holder = None
                self._pass_on()

    def _stale(self, waiter: Waiter) -> Hold | None:
        """The stream the first waiter takes the box back from: garbage-collected, or
        unread for longer than the grace."""
        with self._mutex:
            holder = self._holder
            if (waiter.settled or not self._queue or self._queue[0] is not waiter
                    or holder is None or holder.kind != "stream" or holder.reading
                    or holder.closing):
                return None
            if holder.abandoned or (not holder.revoked
                                    and time.monotonic() - holder.since > self.grace):
                holder.revoked = holder.closing = True
                return holder
            return None

    @staticmethod
    def _closable(hold: Hold) -> Any:
        """The stream of ``hold`` if the caller may close it properly (driving its
        operation's unwinding): its owner left it, and it is of the caller's flavour (a
        blocking one, or one on the caller's running loop)."""
        stream = hold.stream() if hold.stream is not None else None
        if stream is None or hold.revoked or not hold.closing:
            return None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if hasattr(stream, "aclose"):
            return stream if loop is not None and stream.loop is loop else None
        return stream if loop is None else None

    def _take_back(self, hold: Hold) -> None:
        """End the stream ``hold`` and free the lease (blocking)."""
        stream = self._closable(hold)
        if stream is not None:
            try:
                stream.take_back()  # closed: its run is interrupted, its answer closed
            finally:
                self._free(hold)
            return
        hold.revoked = True
        try:
            with self._mutex:
                send = (hold.interruptible and self._interrupt is not None
                        and self._mark_interrupt(hold))
                self._interrupts += 1 if send else 0
            if send:
                assert self._interrupt is not None
                try:
                    self._interrupt()
                except CodeBoxError:
                    pass  # the kernel may be gone: then nothing runs anyway
                finally:
                    self.end_interrupt()
        finally:
            self._free(hold)

    async def _atake_back(self, hold: Hold) -> None:
        stream = self._closable(hold)
        if stream is not None and hasattr(stream, "aclose"):
            try:
                await stream.take_back()
            finally:
                self._free(hold)
            return
        await asyncio.to_thread(self._take_back, hold)

    def _free(self, hold: Hold) -> None:
        with self._mutex:
            if self._holder is hold:
                self._holder = None
            self._pass_on()
