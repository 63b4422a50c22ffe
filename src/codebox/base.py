"""``BaseBox``: the interface every box implements, each operation as a sync method and an
``a``-prefixed async twin with the same parameters and the same result."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ._commands import AsyncCommandStream, Command, CommandStream
from ._streams import AsyncChunkStream, ChunkStream
from .schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, CommandResult, OutputChunk
from .settings import CodeBoxSettings

OnOutput = Callable[[OutputChunk], Any]
"""Called with each chunk of output as it arrives."""

Content = bytes | bytearray | memoryview | str
"""What ``upload`` accepts: bytes, or text (encoded as UTF-8)."""

OnProgress = Callable[[int, int], Any]
"""Called with ``(done_bytes, total_bytes)`` as a file transfer goes on."""


def code_to_run(code: str | None, file_path: str | os.PathLike[str] | None) -> str:
    """The code a ``run`` call means: ``code``, or the text of the local file ``file_path``.

    Raises:
        ValueError: Both or neither were given.
    """
    if (code is None) == (file_path is None):
        raise ValueError("run() takes either code or file_path=, not both and not neither")
    if code is not None:
        if not isinstance(code, str):
            raise ValueError(f"code must be a str, not {type(code).__name__}")
        return code
    return Path(file_path).read_text(encoding="utf-8")  # type: ignore[arg-type]


_Box = TypeVar("_Box", bound="BaseBox")


class BaseBox(abc.ABC):
    """An isolated, stateful Python execution environment.

    Every operation exists as a blocking method and as an ``a``-prefixed coroutine.
    Methods other than ``start``/``status`` start a box that was never started. A box works
    from sync and async code alike (not at the same instant); executions on one box are
    serialised, different boxes run in parallel. ``interrupt`` may be called from another
    thread or task while a run is in progress.
    """

    settings: CodeBoxSettings

    def __init__(self, *, settings: CodeBoxSettings | None = None) -> None:
        self.settings = settings if settings is not None else CodeBoxSettings()
        self._session_id: str | None = None

    @property
    def session_id(self) -> str | None:
        """The id of the box's session once started (``None`` before)."""
        return self._session_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.session_id} {self._state_name()}>"

    def _state_name(self) -> str:
        return "started" if self.session_id else "new"

    def close(self) -> None:
        """Release what the box holds in this process (for a local box: `stop`)."""
        self.stop()

    async def aclose(self) -> None:
        """Async version of `close`."""
        await self.astop()

    # -- context managers -------------------------------------------------------------

    def __enter__(self: _Box) -> _Box:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self: _Box) -> _Box:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- lifecycle --------------------------------------------------------------------

    @abc.abstractmethod
    def start(self) -> CodeBoxStatus:
        """Start the box (idempotent). Returns the status ``"started"``."""

    @abc.abstractmethod
    async def astart(self) -> CodeBoxStatus:
        """Async version of `start`."""

    @abc.abstractmethod
    def stop(self) -> CodeBoxStatus:
        """Stop the box and free everything it owns (idempotent); it can be started again."""

    @abc.abstractmethod
    async def astop(self) -> CodeBoxStatus:
        """Async version of `stop`."""

    @abc.abstractmethod
    def status(self) -> CodeBoxStatus:
        """``"running"``, ``"starting"`` or ``"stopped"``; never has side effects."""

    @abc.abstractmethod
    async def astatus(self) -> CodeBoxStatus:
        """Async version of `status`."""

    # -- code -------------------------------------------------------------------------

    @abc.abstractmethod
    def run(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Run code (or the local file ``file_path``) and return all of its output.

        Args:
            code: Python source to run.
            file_path: A local file whose text is run instead of ``code``.
            timeout: Seconds before the run is interrupted (default: the setting
                ``run_timeout``, no limit). The output so far is kept and the result's
                ``error.name`` is ``"TimeoutError"``.
            on_output: Called with each `OutputChunk` as it arrives.

        Raises:
            ValueError: Both or neither of ``code`` and ``file_path`` were given.
            CodeBoxError: The box itself failed (a failure of the code is ``output.error``).
        """

    @abc.abstractmethod
    async def arun(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Async version of `run`."""

    @abc.abstractmethod
    def stream(self, code: str, *, timeout: float | None = None) -> ChunkStream:
        """Run code and yield its output chunks as they are produced.

        The stream is an iterator and a context manager (``with box.stream(code) as s:``).
        Leaving it early (``close()``, or the end of the ``with`` block) interrupts the run.
        A stream left unfinished and unclosed does not block the box: its next operation
        closes it (interrupting its run) first.
        """

    @abc.abstractmethod
    def astream(self, code: str, *, timeout: float | None = None) -> AsyncChunkStream:
        """Async version of `stream` (``async for``, ``async with``, ``aclose()``)."""

    @abc.abstractmethod
    def interrupt(self) -> CodeBoxStatus:
        """Interrupt the running execution (state is kept); callable from another thread.

        A box with nothing running is left as it is; one that was never started is not
        started (its status is returned).
        """

    @abc.abstractmethod
    async def ainterrupt(self) -> CodeBoxStatus:
        """Async version of `interrupt`."""

    @abc.abstractmethod
    def restart(self) -> CodeBoxStatus:
        """Restart the kernel: variables are gone, files are kept."""

    @abc.abstractmethod
    async def arestart(self) -> CodeBoxStatus:
        """Async version of `restart`."""

    @abc.abstractmethod
    def install(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Install packages with pip into the box's interpreter.

        Raises:
            CodeBoxError: The install failed; the message carries pip's.
        """

    @abc.abstractmethod
    async def ainstall(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Async version of `install`."""

    # -- files ------------------------------------------------------------------------

    @abc.abstractmethod
    def upload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Write ``content`` to the relative path ``file_name`` in the box.

        ``on_progress(done_bytes, total_bytes)`` is called as the transfer goes on.

        Raises:
            CodeBoxError: The name is absolute, escapes with ``..`` or holds a NUL byte
                (nothing is written), or the transfer failed.
        """

    @abc.abstractmethod
    async def aupload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Async version of `upload`."""

    @abc.abstractmethod
    def download(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Read the file ``file_name`` from the box.

        ``on_progress(done_bytes, total_bytes)`` is called as the transfer goes on.

        Raises:
            CodeBoxNotFoundError: There is no such file (also a ``FileNotFoundError``).
        """

    @abc.abstractmethod
    async def adownload(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Async version of `download`."""

    @abc.abstractmethod
    def list_files(self) -> list[CodeBoxFile]:
        """Every file in the box, recursively, with sizes, sorted by name."""

    @abc.abstractmethod
    async def alist_files(self) -> list[CodeBoxFile]:
        """Async version of `list_files`."""

    # -- file operations ----------------------------------------------------------------
    # Paths follow the rules of file names: relative, inside the box, no ``..``, no NUL.

    @abc.abstractmethod
    def remove(self, path: str) -> CodeBoxStatus:
        """Remove a file, or a directory with everything in it.

        Raises:
            CodeBoxNotFoundError: There is no such path (also a ``FileNotFoundError``).
            CodeBoxError: The path breaks the file-name rules.
        """

    @abc.abstractmethod
    async def aremove(self, path: str) -> CodeBoxStatus:
        """Async version of `remove`."""

    @abc.abstractmethod
    def rename(self, source: str, destination: str) -> CodeBoxFile:
        """Move a file or directory; the parents of ``destination`` are created, and a file
        already there is replaced. Returns the moved file under its new name.

        Raises:
            CodeBoxNotFoundError: There is no ``source``.
        """

    @abc.abstractmethod
    async def arename(self, source: str, destination: str) -> CodeBoxFile:
        """Async version of `rename`."""

    @abc.abstractmethod
    def make_dir(self, path: str) -> CodeBoxFile:
        """Create a directory and its parents; an existing directory is fine."""

    @abc.abstractmethod
    async def amake_dir(self, path: str) -> CodeBoxFile:
        """Async version of `make_dir`."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a file or directory exists at ``path``."""

    @abc.abstractmethod
    async def aexists(self, path: str) -> bool:
        """Async version of `exists`."""

    @abc.abstractmethod
    def file_info(self, path: str) -> CodeBoxFile:
        """A file or directory's ``size`` (None for a directory), ``is_dir`` and
        ``modified`` (UTC).

        Raises:
            CodeBoxNotFoundError: There is no such path (also a ``FileNotFoundError``).
        """

    @abc.abstractmethod
    async def afile_info(self, path: str) -> CodeBoxFile:
        """Async version of `file_info`."""

    # -- shell commands -------------------------------------------------------------------

    @abc.abstractmethod
    def shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OnOutput | None = None,
    ) -> CommandResult:
        """Run a command in the box: same files (and sandbox) as the code.

        Args:
            command: A ``str`` run by ``/bin/sh -c``, or a list ``[program, *args]`` run
                directly, without a shell.
            timeout: Seconds before the command, and every process it started, is ended
                (default: the setting ``run_timeout``, no limit). The output so far is kept
                and ``timed_out`` is set.
            cwd: The directory to start in, relative to the box (default: its root).
            env: Variables added to the command's environment.
            on_output: Called with each ``"stdout"``/``"stderr"`` `OutputChunk` as it
                arrives.

        Returns:
            The exit code and the output; a non-zero exit is data, not an error. Processes
            the command leaves running in its process group end when it returns.

        Raises:
            ValueError: The command, ``env`` or ``timeout`` is malformed.
            CodeBoxNotFoundError: ``cwd`` does not exist.
            CodeBoxError: ``cwd`` breaks the file-name rules, or the box itself failed.
        """

    @abc.abstractmethod
    async def ashell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OnOutput | None = None,
    ) -> CommandResult:
        """Async version of `shell`."""

    @abc.abstractmethod
    def stream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandStream:
        """Run a command (as `shell`) and iterate over its output chunks as they come; the
        stream's ``result`` holds the `CommandResult` once the iteration is over. Leaving
        early ends the command."""

    @abc.abstractmethod
    def astream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> AsyncCommandStream:
        """Async version of `stream_shell`."""
