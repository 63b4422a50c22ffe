"""The engine every box runs on: an operation is written once, as a generator, and carried
out by a sync or an async runner over a transport.

An operation (`Op`) yields requests and receives their results; it does no I/O itself. A
request is either `Emit` (hand one chunk of output to the consumer) or a request of the
box's transport, which carries it out: a `Transport` with blocking I/O, an `AsyncTransport`
on an event loop. `LocalBox` supplies a Jupyter transport (gateway REST calls and the kernel
websocket), `CodeBox` a REST one, tests a scripted one (`ScriptedTransport`, after httpx's
``MockTransport``). A transport raises only `CodeBoxError` (it converts its library's
failures once, at its boundary); the runner throws each failure into the operation at the
request that failed, so the operation reacts (interrupts the kernel, reconnects) in one
place for both flavours.

A consumer that stops reading a stream, or whose ``on_output`` fails, is told to the
operation: `StreamAbandoned` (or the failure itself) is thrown in, and the operation may
still do I/O to clean up — it emits nothing more. A `Guard` is asked before every request:
once the box's lease has passed to someone else (`stop` took it), the operation's requests
are refused with `Revoked` instead of touching a connection that is no longer its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import CodeBoxError

T = TypeVar("T")

OnProgress = Callable[[int, int], Any]
"""Called with ``(done_bytes, total_bytes)`` as a file transfer goes on."""


@dataclass(frozen=True)
class Emit:
    """Hand one item to the consumer (``on_output``, or the stream being read)."""

    chunk: Any


Op = Generator[Any, Any, T]
"""An operation: yields requests (`Emit` or a transport's), receives their results."""


class StreamAbandoned(Exception):
    """Thrown into an operation whose consumer stopped reading: end the run, emit nothing."""


class Revoked(CodeBoxError):
    """The operation's hold on its box ended (the box was stopped): it may do no more I/O."""


class Cleanup:
    """Mixin of requests that release what one operation opened itself (a response it
    holds): still carried out for an operation whose hold was revoked."""


class Interrupting:
    """Mixin of requests that interrupt the box's running code: the guard lets through at
    most one per `INTERRUPT_SPACING` for one operation (a kernel interrupted again while it
    is still winding the first one down may lose its next request)."""


@runtime_checkable
class Transport(Protocol):
    """Carries out a box's requests with blocking I/O."""

    def handle(self, request: Any) -> Any:
        """Carry out ``request``; its result.

        Raises:
            CodeBoxError: It failed (the only kind of exception a transport raises for I/O).
        """

    def abort(self) -> None:
        """Cut the connection under whatever waits on it; callable from any thread."""

    def close(self) -> None:
        """Release every connection (a later request opens new ones)."""


@runtime_checkable
class AsyncTransport(Protocol):
    """Carries out a box's requests on one event loop (``loop``)."""

    loop: asyncio.AbstractEventLoop

    async def handle(self, request: Any) -> Any:
        """Async version of `Transport.handle`."""

    def abort(self) -> None:
        """Cut the connection under whatever waits on it; callable from any thread."""

    async def aclose(self) -> None:
        """Release every connection."""


Guard = Callable[[Any], bool]
"""Asked before each request: raises `Revoked` once the operation may no longer use the
box's connections; False skips the request (its result is None)."""


class Done:
    """The last item of an async step sequence: the operation's result."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Stepper:
    """Drives one operation, pure: `next` says what it asks for; `give` or `fail` hands it
    the outcome. A consumer that left (``GeneratorExit``) becomes `StreamAbandoned` in the
    operation, which may still do I/O to clean up but emits nothing more."""

    __slots__ = ("_error", "_op", "_value", "abandoned", "result")

    def __init__(self, op: Op[Any]) -> None:
        self._op = op
        self._value: Any = None
        self._error: BaseException | None = None
        self.abandoned = False
        self.result: Any = None

    def next(self) -> Any | None:
        """The operation's next request; ``None`` once it is over (see `result`)."""
        while True:
            try:
                if self._error is not None:
                    error, self._error = self._error, None
                    req = self._op.throw(error)
                else:
                    value, self._value = self._value, None
                    req = self._op.send(value)
            except StopIteration as stop:
                self.result = stop.value
                return None
            except (StreamAbandoned, Revoked):
                if self.abandoned:
                    return None  # unwound as asked (or as far as it still could)
                raise
            if isinstance(req, Emit) and self.abandoned:
                self._error = StreamAbandoned()
                continue
            return req

    def give(self, value: Any) -> None:
        """The result of the request under way."""
        self._value = value

    def fail(self, exc: BaseException) -> None:
        """The request under way failed with ``exc`` (or the consumer left or failed)."""
        if isinstance(exc, GeneratorExit):
            self.abandoned, exc = True, StreamAbandoned()
        self._error = exc


def _skipped(guard: Guard | None, req: Any) -> bool:
    return guard is not None and not isinstance(req, Cleanup) and not guard(req)


def steps(op: Op[T], transport: Transport, guard: Guard | None = None
          ) -> Generator[Any, None, T]:
    """Carry out ``op``, yielding what it emits; returns its result. Closing the generator
    early unwinds the operation (`StreamAbandoned`)."""
    stepper = Stepper(op)
    while (req := stepper.next()) is not None:
        try:
            if isinstance(req, Emit):
                yield req.chunk
            elif not _skipped(guard, req):
                stepper.give(transport.handle(req))
        except BaseException as exc:  # noqa: BLE001 - handed to the operation
            stepper.fail(exc)
    return stepper.result


def run(op: Op[T], transport: Transport, on_output: Callable[[Any], Any] | None = None,
        guard: Guard | None = None) -> T:
    """Carry out ``op`` to its result, handing what it emits to ``on_output``."""
    gen = steps(op, transport, guard)
    while True:
        try:
            chunk = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_output is not None:
            try:
                on_output(chunk)
            except BaseException as exc:  # noqa: BLE001 - the operation unwinds, re-raises
                gen.throw(exc)


async def asteps(op: Op[Any], transport: AsyncTransport, guard: Guard | None = None
                 ) -> AsyncGenerator[Any, None]:
    """Async version of `steps`: yields what ``op`` emits, then `Done` with its result
    (unless the consumer left)."""
    stepper = Stepper(op)
    while (req := stepper.next()) is not None:
        try:
            if isinstance(req, Emit):
                yield req.chunk
            elif not _skipped(guard, req):
                stepper.give(await transport.handle(req))
        except BaseException as exc:  # noqa: BLE001 - handed to the operation
            stepper.fail(exc)
    if not stepper.abandoned:
        yield Done(stepper.result)


async def arun(op: Op[T], transport: AsyncTransport,
               on_output: Callable[[Any], Any] | None = None, guard: Guard | None = None) -> T:
    """Async version of `run`."""
    gen = asteps(op, transport, guard)
    try:
        async for item in gen:
            if isinstance(item, Done):
                return item.value
            if on_output is not None:
                try:
                    on_output(item)
                except BaseException as exc:  # noqa: BLE001 - the operation unwinds, re-raises
                    await gen.athrow(exc)
    finally:
        await gen.aclose()
    raise AssertionError("unreachable: the steps end with Done")


def pure(compute: Callable[[], T]) -> Op[T]:
    """An operation without I/O: its result is ``compute()``, called when it runs (under
    the box's lease, like every other)."""
    return compute()
    yield  # a generator: nothing is computed before it runs


class ScriptedTransport:
    """A transport whose answers come from a function, for tests (both flavours): the
    function gets each request and returns its result or raises (a `CodeBoxError`, as a
    real transport would)."""

    def __init__(self, handler: Callable[[Any], Any]) -> None:
        self.handler = handler
        self.requests: list[Any] = []
        self.aborted = 0

    def handle(self, request: Any) -> Any:
        self.requests.append(request)
        return self.handler(request)

    def abort(self) -> None:
        self.aborted += 1

    def close(self) -> None:
        pass


class AsyncScriptedTransport(ScriptedTransport):
    """`ScriptedTransport` for the async runner (made on the running loop)."""

    def __init__(self, handler: Callable[[Any], Any]) -> None:
        super().__init__(handler)
        self.loop = asyncio.get_running_loop()

    async def handle(self, request: Any) -> Any:
        return super().handle(request)

    async def aclose(self) -> None:
        pass
