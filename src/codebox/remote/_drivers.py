"""The two drivers that carry out the I/O requests of `codebox.remote._ops`: `SyncDriver`
(``httpx.Client``) and `AsyncDriver` (``httpx.AsyncClient``).

The stepping of an operation (what to send next, what to throw into it) is the pure
`Stepper`; a driver only does the I/O of each request. httpx failures become
`CodeBoxError` here, in `convert`, the one place where they are converted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any

import httpx

from ..errors import CodeBoxConnectionError, CodeBoxError, CodeBoxTimeoutError
from ..schema import OutputChunk
from ._ops import (
    CloseStream,
    Emit,
    Io,
    IoRequest,
    Op,
    Open,
    ReadChunk,
    ReadLine,
    Send,
    SendFailed,
    Sleep,
    StreamAbandoned,
)
from ._replies import Reply
from ._requests import Request

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""Failures that happen before a request is sent: safe to retry whatever the operation."""

HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def convert(what: str, exc: Exception) -> CodeBoxError:
    """The `CodeBoxError` for an httpx exception."""
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__
        return CodeBoxTimeoutError(f"CodeBox {what} timed out ({kind}): {exc}")
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol):
        return CodeBoxConnectionError(f"CodeBox {what} failed: connection error: {exc}")
    return CodeBoxError(f"CodeBox {what} failed: {type(exc).__name__}: {exc}")


def _failed(req: Request[Any], exc: Exception) -> SendFailed:
    error = convert(req.what, exc)
    error.__cause__ = exc
    return SendFailed(error, unsent=isinstance(exc, _UNSENT))


def _args(req: Request[Any], timeout: float) -> dict[str, Any]:
    return {
        "method": req.method,
        "url": req.path,
        "params": req.params,
        "json": req.json,
        "files": req.files,
        "timeout": httpx.Timeout(timeout, **req.timeout),
    }


def _reply(response: httpx.Response, content: bytes = b"") -> Reply:
    return Reply(response.status_code, response.headers, content)


class Stepper:
    """Drives one operation, pure: `next` says what the op asks for; `give` or `fail` hands
    it the outcome. A consumer that left (``GeneratorExit``) becomes `StreamAbandoned` in
    the op, which may still do I/O to clean up but emits nothing more."""

    def __init__(self, op: Op[Any]) -> None:
        self._op = op
        self._value: Any = None
        self._error: BaseException | None = None
        self.abandoned = False
        self.result: Any = None

    def next(self) -> IoRequest | None:
        """The op's next request; ``None`` once it is over (its value is `result`)."""
        while True:
            try:
                if self._error is not None:
                    req = self._op.throw(self._error)
                else:
                    req = self._op.send(self._value)
            except StopIteration as stop:
                self.result = stop.value
                return None
            except StreamAbandoned:
                if self.abandoned:
                    return None  # unwound as asked
                raise
            self._value, self._error = None, None
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


class _Answer:
    """The answer an operation holds open (one streamed response at a time)."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None
        # Its lines (`ReadLine`) or its bytes (`ReadChunk`), once the op reads it.
        self.parts: Iterator[Any] | AsyncIterator[Any] | None = None
        self.what = ""


class SyncDriver:
    """Carries out operations with blocking I/O on one ``httpx.Client`` (thread-safe)."""

    def __init__(
        self,
        make_client: Callable[[], httpx.Client],
        timeout: float,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._make_client = make_client
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self.client: httpx.Client | None = None

    def run(self, op: Op[Any], on_output: Callable[[OutputChunk], Any] | None = None) -> Any:
        """Carry out ``op`` to its result, handing chunks to ``on_output``."""
        steps = self.steps(op)
        while True:
            try:
                chunk = next(steps)
            except StopIteration as stop:
                return stop.value
            if on_output is not None:
                try:
                    on_output(chunk)
                except BaseException as exc:  # noqa: BLE001 - the op unwinds, then re-raises
                    steps.throw(exc)

    def steps(self, op: Op[Any]) -> Generator[OutputChunk, None, Any]:
        """Carry out ``op``, yielding the chunks it emits; returns its result."""
        stepper, answer = Stepper(op), _Answer()
        try:
            while (req := stepper.next()) is not None:
                try:
                    if isinstance(req, Emit):
                        yield req.chunk
                    else:
                        stepper.give(self._do(req, answer))
                except BaseException as exc:  # noqa: BLE001 - handed to the op
                    stepper.fail(exc)
        finally:
            self._close_answer(answer)
        return stepper.result

    def _do(self, req: Io, answer: _Answer) -> Any:
        if isinstance(req, Sleep):
            return (self._sleep or _sleep)(req.seconds)
        if isinstance(req, CloseStream):
            return self._close_answer(answer)
        if isinstance(req, (ReadLine, ReadChunk)):
            return self._read(answer, isinstance(req, ReadLine))
        return self._send(req, answer)

    def _send(self, req: Send | Open, answer: _Answer) -> Reply:
        try:
            if isinstance(req, Open):
                return self._open(req.request, answer)
            response = self._client().request(**_args(req.request, self._timeout))
        except HTTPX_ERRORS as exc:
            raise _failed(req.request, exc) from exc
        return _reply(response, response.content)

    @staticmethod
    def _read(answer: _Answer, lines: bool) -> str | bytes | None:
        assert answer.response is not None
        if answer.parts is None:
            answer.parts = answer.response.iter_lines() if lines else answer.response.iter_bytes()
        assert isinstance(answer.parts, Iterator)
        try:
            return next(answer.parts, None)
        except HTTPX_ERRORS as exc:
            raise convert(answer.what, exc) from exc

    def _open(self, req: Request[Any], answer: _Answer) -> Reply:
        self._close_answer(answer)
        request = self._client().build_request(**_args(req, self._timeout))
        response = self._client().send(request, stream=True)
        if not response.is_success:
            try:
                return _reply(response, response.read())
            finally:
                response.close()
        answer.response, answer.what = response, req.what
        return _reply(response)

    @staticmethod
    def _close_answer(answer: _Answer) -> None:
        response, answer.response, answer.parts = answer.response, None, None
        if response is not None:
            response.close()

    def _client(self) -> httpx.Client:
        with self._lock:
            if self.client is None:
                self.client = self._make_client()
            return self.client

    def close(self) -> None:
        """Close the HTTP client (a later operation makes a new one)."""
        with self._lock:
            client, self.client = self.client, None
        if client is not None:
            client.close()


class Done:
    """The last item of an async step sequence: the operation's result."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class AsyncDriver:
    """Carries out operations on the event loop it was created in, on one
    ``httpx.AsyncClient``."""

    def __init__(
        self,
        make_client: Callable[[], httpx.AsyncClient],
        timeout: float,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._make_client = make_client
        self._timeout = timeout
        self._sleep = sleep
        self.client: httpx.AsyncClient | None = None

    async def run(
        self, op: Op[Any], on_output: Callable[[OutputChunk], Any] | None = None
    ) -> Any:
        """Carry out ``op`` to its result, handing chunks to ``on_output``."""
        steps = self.steps(op)
        async for item in steps:
            if isinstance(item, Done):
                return item.value
            if on_output is not None:
                try:
                    on_output(item)
                except BaseException as exc:  # noqa: BLE001 - the op unwinds, then re-raises
                    await steps.athrow(exc)
        raise AssertionError("unreachable: steps end with Done")

    async def steps(self, op: Op[Any]) -> AsyncGenerator[OutputChunk | Done, None]:
        """Carry out ``op``, yielding its chunks and finally `Done` with its result."""
        stepper, answer = Stepper(op), _Answer()
        try:
            while (req := stepper.next()) is not None:
                try:
                    if isinstance(req, Emit):
                        yield req.chunk
                    else:
                        stepper.give(await self._do(req, answer))
                except BaseException as exc:  # noqa: BLE001 - handed to the op
                    stepper.fail(exc)
        finally:
            await self._close_answer(answer)
        if not stepper.abandoned:
            yield Done(stepper.result)

    async def _do(self, req: Io, answer: _Answer) -> Any:
        if isinstance(req, Sleep):
            return await (self._sleep or _asleep)(req.seconds)
        if isinstance(req, CloseStream):
            return await self._close_answer(answer)
        if isinstance(req, (ReadLine, ReadChunk)):
            return await self._read(answer, isinstance(req, ReadLine))
        return await self._send(req, answer)

    async def _send(self, req: Send | Open, answer: _Answer) -> Reply:
        try:
            if isinstance(req, Open):
                return await self._open(req.request, answer)
            response = await self._client().request(**_args(req.request, self._timeout))
        except HTTPX_ERRORS as exc:
            raise _failed(req.request, exc) from exc
        return _reply(response, response.content)

    @staticmethod
    async def _read(answer: _Answer, lines: bool) -> str | bytes | None:
        assert answer.response is not None
        if answer.parts is None:
            response = answer.response
            answer.parts = response.aiter_lines() if lines else response.aiter_bytes()
        assert isinstance(answer.parts, AsyncIterator)
        try:
            return await anext(answer.parts, None)
        except HTTPX_ERRORS as exc:
            raise convert(answer.what, exc) from exc

    async def _open(self, req: Request[Any], answer: _Answer) -> Reply:
        await self._close_answer(answer)
        request = self._client().build_request(**_args(req, self._timeout))
        response = await self._client().send(request, stream=True)
        if not response.is_success:
            try:
                return _reply(response, await response.aread())
            finally:
                await response.aclose()
        answer.response, answer.what = response, req.what
        return _reply(response)

    @staticmethod
    async def _close_answer(answer: _Answer) -> None:
        response, answer.response, answer.parts = answer.response, None, None
        if response is not None:
            await response.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = self._make_client()
        return self.client

    async def close(self) -> None:
        """Close the HTTP client (a later operation makes a new one)."""
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
