"""Shell commands, as every backend checks and collects them: pure, no I/O.

The arguments of ``shell`` are checked here before anything is sent (the same rules on
`LocalBox`, on `CodeBox` and in ``codebox serve``), and `CommandOutput` turns the bytes a
command writes into `OutputChunk` objects and, at the end, a `CommandResult`.
"""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

from ._paths import check_file_name
from ._streams import AsyncChunkStream, ChunkStream, StreamSlot
from .errors import CodeBoxError
from .schema import CommandResult, OutputChunk

Command = str | Sequence[str]
"""A command: a string for ``/bin/sh -c``, or a program and its arguments (no shell)."""

STREAMS = ("stdout", "stderr")


def check_command(command: Any) -> str | list[str]:
    """The command as sent to the box: a non-empty ``str``, or a non-empty list of ``str``.

    Raises:
        ValueError: Anything else, or a NUL byte (which no program can receive).
    """
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("the command is empty")
        parts = [command]
    elif isinstance(command, Sequence) and not isinstance(command, (bytes, bytearray)):
        parts = list(command)
        if not parts:
            raise ValueError("the command is empty: give a program and its arguments")
        if not all(isinstance(p, str) for p in parts):
            raise ValueError("every item of a command list must be a str")
        if not parts[0]:
            raise ValueError("the command names no program")
    else:
        raise ValueError(f"a command is a str or a list of str, not {type(command).__name__}")
    if any("\x00" in p for p in parts):
        raise ValueError("a command cannot hold a NUL byte")
    return command if isinstance(command, str) else parts


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Environment variables as sent to the box (``{}`` for none).

    Raises:
        ValueError: A name that is empty or holds ``=``, or a name or value that is not a
            ``str`` or holds a NUL byte.
    """
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a dict of str to str, not {type(env).__name__}")
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"env must map str to str: {name!r}={value!r}")
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise ValueError(f"not a valid environment variable: {name!r}")
    return dict(env)


def check_cwd(cwd: str | None) -> str | None:
    """The directory a command starts in, relative to the box (None: the box's own).

    Raises:
        CodeBoxError: The path breaks the file-name rules (absolute, ``..``, NUL, ...).
    """
    if cwd is None or cwd in (".", "./"):
        return None
    try:
        return check_file_name(cwd)
    except CodeBoxError as exc:
        raise CodeBoxError(f"invalid cwd: {exc.message}") from None


def check_timeout(timeout: float | None) -> float | None:
    """A timeout in seconds, or None (no limit).

    Raises:
        ValueError: Not a positive finite number.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


class CommandOutput:
    """What a command wrote, as chunks in the order it arrived.

    Bytes are decoded as UTF-8 per stream (a character split between two reads is kept
    whole; invalid bytes become U+FFFD). Adjacent pieces of one stream merge into one
    chunk of the result, while each piece is handed on as it comes.

    Args:
        output_limit: Most characters to keep; the rest is cut and the result says so
            (None: keep everything).
    """

    def __init__(self, output_limit: int | None = None) -> None:
        self.output_limit = output_limit
        self.truncated = False
        self._kept = 0
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}
        self._parts: list[tuple[str, list[str]]] = []

    def feed(self, stream: str, data: bytes | memoryview) -> OutputChunk | None:
        """Take bytes the command wrote to ``stream``; return the chunk to hand on, if any."""
        text = self._decoders[stream].decode(bytes(data))
        return self.add(OutputChunk(type=stream, content=text)) if text else None

    def flush(self) -> list[OutputChunk]:
        """The chunks left in the decoders (an incomplete character at the very end)."""
        chunks = []
        for stream, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            chunk = self.add(OutputChunk(type=stream, content=text)) if text else None
            if chunk is not None:
                chunks.append(chunk)
        return chunks

    def add(self, chunk: OutputChunk) -> OutputChunk | None:
        """Keep a decoded chunk (within the limit); return what was kept of it."""
        if chunk.type not in STREAMS:
            return None
        if self.output_limit is not None:
            room = self.output_limit - self._kept
            if room <= 0:
                self.truncated = True
                return None
            if len(chunk.content) > room:
                self.truncated = True
                note = f"\n[codebox: output truncated after {self.output_limit} characters]\n"
                chunk = OutputChunk(type=chunk.type, content=chunk.content[:room] + note)
                self._kept = self.output_limit
            else:
                self._kept += len(chunk.content)
        if self._parts and self._parts[-1][0] == chunk.type:
            self._parts[-1][1].append(chunk.content)
        else:
            self._parts.append((chunk.type, [chunk.content]))
        return chunk

    def result(self, exit_code: int, timed_out: bool = False) -> CommandResult:
        """The result of the command."""
        chunks = [OutputChunk(type=t, content="".join(p)) for t, p in self._parts]
        return CommandResult.from_chunks(chunks, exit_code=exit_code, timed_out=timed_out,
                                         truncated=self.truncated)


class CommandStream(ChunkStream):
    """The output of a command as it comes: a `ChunkStream` (an iterator of `OutputChunk`
    and a context manager) whose `result` holds the `CommandResult` once it is over.

        with box.stream_shell("make") as stream:
            for chunk in stream:
                print(chunk.content, end="")
        print(stream.result.exit_code)

    Leaving early (``close()``, or the ``with`` block) ends the command; so does the box's
    next operation, for a stream left unfinished.
    """

    def __init__(
        self,
        slot: StreamSlot,
        begin: Callable[[], Generator[OutputChunk, None, Any]],
        lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        super().__init__(slot, begin, lock)
        self.result: CommandResult | None = None

    def __next__(self) -> OutputChunk:
        try:
            return super().__next__()
        except StopIteration as stop:
            if isinstance(stop.value, CommandResult):
                self.result = stop.value
            raise


class AsyncCommandStream(AsyncChunkStream):
    """Async version of `CommandStream` (``async for``, ``async with``, ``aclose()``)."""

    def __init__(
        self,
        slot: StreamSlot,
        begin: Callable[[], Awaitable[AsyncGenerator[Any, None]]],
        lock: Callable[[], AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        super().__init__(slot, begin, self._is_end, lock)
        self.result: CommandResult | None = None

    def _is_end(self, item: Any) -> bool:
        # Anything but a chunk is the driver's last item, carrying the result.
        if isinstance(item, OutputChunk):
            return False
        self.result = getattr(item, "value", None)
        return True
