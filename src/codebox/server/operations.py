"""Operations on a session's box, as the endpoints call them: held against culling, and
surviving the death of the spawned gateway (the session starts a fresh kernel; a run
reports once that the session's state is gone)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..base import OnOutput
from ..schema import CodeBoxOutput, CommandResult, ExecError, OutputChunk
from .errors import INFRASTRUCTURE_ERRORS
from .sessions import Session, SessionManager

T = TypeVar("T")

STATE_GONE = (
    "the Kernel Gateway serving this session died and was started again: the session's "
    "variables are gone (its files are kept). {what} Run it again."
)


def state_gone(output: CodeBoxOutput | None) -> CodeBoxOutput:
    """The answer of a run on a session whose gateway died: the output it produced, if
    any, ending in a ``KernelDiedError`` that says the state is gone."""
    what = "This code did not run." if output is None else "This run did not finish."
    error = ExecError(name="KernelDiedError", value=STATE_GONE.format(what=what))
    chunks = [c for c in (output.chunks if output else []) if c.type != "error"]
    chunks.append(OutputChunk(type="error", content=str(error)))
    return CodeBoxOutput.from_chunks(chunks, error=error)


async def execute(
    manager: SessionManager,
    session: Session,
    code: str,
    timeout: float,
    on_output: OnOutput | None = None,
) -> CodeBoxOutput:
    """Run ``code`` in the session within ``timeout`` seconds."""
    async with manager.use(session):
        if session.state_lost:
            session.state_lost = False
            return state_gone(None)
        output: CodeBoxOutput | None = None
        try:
            output = await session.box.arun(code, timeout=timeout, on_output=on_output)
        except INFRASTRUCTURE_ERRORS:
            await manager.check_gateway()
            if not session.state_lost:
                raise
        else:
            if output.error is None or output.error.name != "KernelDiedError":
                return output
            await manager.check_gateway()
            if not session.state_lost:
                return output  # the kernel died, not the gateway: the box said so
        await manager.reset(session)
        session.state_lost = False
        return state_gone(output)


async def operate(
    manager: SessionManager, session: Session, call: Callable[[], Awaitable[T]]
) -> T:
    """Carry out ``call`` (an operation of the session's box); if the gateway died under
    it, once more on a fresh kernel (files, installs and restarts are safe to repeat)."""
    async with manager.use(session):
        try:
            return await call()
        except INFRASTRUCTURE_ERRORS:
            before = session.generation
            await manager.check_gateway()
            if manager.generation == before:
                raise
        await manager.reset(session)
        return await call()


async def command(
    manager: SessionManager,
    session: Session,
    args: dict[str, Any],
    on_output: OnOutput | None = None,
) -> CommandResult:
    """Run a shell command in the session; ``args`` are `LocalBox.ashell`'s keywords. Never
    repeated (a command may have run when its box failed)."""
    async with manager.use(session):
        return await session.box.ashell(**args, on_output=on_output)
