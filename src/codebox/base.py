"""``BaseBox``: the interface every box implements, each operation as a sync method and an
``a``-prefixed async twin with the same parameters and the same result.

Every public method is written here, once for every box: it checks its arguments (the same
rules on every box), asks the box's `BoxOps` for the operation, and hands it to `_core`,
which takes the box's lease and runs the operation on the engine's sync or async runner over
the box's transport. A box backend (`LocalBox`, `CodeBox`) supplies only its operations, its
transports and its side channel (interrupts). Adding an operation means one method on
`BoxOps` per backend and one pair of twins here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TypeVar

from ._checks import (
    Command,
    Content,
    check_command,
    check_content,
    check_cwd,
    check_env,
    check_package_names,
    check_timeout,
    code_to_run,
)
from ._core import BoxCore, BoxOps, OnOutput
from ._engine import OnProgress, Op
from ._lifetimes import check_lifetime
from ._paths import check_file_name
from ._streams import (
    AsyncCommandStream,
    AsyncDownloadStream,
    AsyncRunStream,
    CommandStream,
    DownloadStream,
    RunStream,
)
from .schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, CommandResult, Snapshot

__all__ = ["BaseBox", "BoxOps", "Content", "OnOutput", "OnProgress"]

logger = logging.getLogger(__name__)

INSTALL_TIMEOUT = 600.0
"""Default seconds an install may take."""

T = TypeVar("T")
_Box = TypeVar("_Box", bound="BaseBox")


class BaseBox(BoxCore):
    """An isolated, stateful Python execution environment.

    Every operation exists as a blocking method and as an ``a``-prefixed coroutine. Methods
    other than ``start``/``status``/``stop``/``interrupt`` start a box that was never
    started (or was stopped). A box works from sync and async code alike; its operations
    are serialised (first come, first served, from any thread or task), different boxes run
    in parallel. ``interrupt`` may be called from another thread or task while a run is in
    progress, and ``stop`` always works: it ends the operation in progress.
    """

    @property
    def session_id(self) -> str | None:
        """The id of the box's session once started (``None`` before)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.session_id} {self._ops.status()}>"

    # -- context managers ---------------------------------------------------------------

    def __enter__(self: _Box) -> _Box:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self: _Box) -> _Box:
        await self.astart()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.astop()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> CodeBoxStatus:
        """Start the box (idempotent). Returns the status ``"started"``."""
        return self._call(self._ops.start())

    async def astart(self) -> CodeBoxStatus:
        """Async version of `start`."""
        return await self._acall(self._ops.start())

    def stop(self) -> CodeBoxStatus:
        """Stop the box and free everything it owns (idempotent); it can be started again.

        An operation in progress is ended first (its run interrupted; one that does not let
        go within the grace has its connection cut), and calls waiting for the box fail
        with `CodeBoxError`. Returns the status ``"stopped"``.
        """
        return self._stop()

    async def astop(self) -> CodeBoxStatus:
        """Async version of `stop`. Once begun, a stop completes even if the awaiting task
        is cancelled (the operation it ended is gone either way)."""
        return await asyncio.shield(asyncio.ensure_future(self._astop_now()))

    def close(self) -> None:
        """The same as `stop`, on every box: the box ends, and with it what it holds (for a
        `CodeBox`, its session on the server). To let go of a box but keep it, `detach`."""
        self.stop()

    async def aclose(self) -> None:
        """Async version of `close`."""
        await self.astop()

    def detach(self) -> None:
        """Let go of the box without ending it: its connections in this process close, and
        its kernel (session) keeps running, to be attached again (``from_id``)."""
        self._detach()

    async def adetach(self) -> None:
        """Async version of `detach`."""
        await self._adetach()

    def set_lifetime(self, seconds: float | None) -> datetime | None:
        """Make the box stop by itself ``seconds`` after its last use (every call is a use;
        None: never). Returns when it expires (UTC), or None.

        Raises:
            ValueError: ``seconds`` is not positive and finite.
        """
        # (A use itself: it counts from now, and says when.)
        return self._call(self._ops.set_lifetime(check_lifetime(seconds)), use=False)

    async def aset_lifetime(self, seconds: float | None) -> datetime | None:
        """Async version of `set_lifetime`."""
        return await self._acall(self._ops.set_lifetime(check_lifetime(seconds)), use=False)

    # -- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Save the box's state: its files, the packages installed into it and its
        variables that can be pickled (cloudpickle: functions and classes defined in the
        box included). Those that cannot be are named in ``unpicklable``, never silently
        left out. Start a box from it with ``LocalBox(snapshot=...)`` /
        ``CodeBox(snapshot=...)``.

        Raises:
            CodeBoxError: The snapshot could not be taken (nothing is kept); on a server,
                also when it would exceed the key's snapshot quota (HTTP 413).
        """
        return self._call(self._ops.snapshot())

    async def asnapshot(self) -> Snapshot:
        """Async version of `snapshot`."""
        return await self._acall(self._ops.snapshot())

    def fork(self: _Box) -> _Box:
        """A new box of the same kind and options, started from a snapshot of this one
        (files, packages, variables); this box goes on unchanged. The snapshot taken for
        it is removed once the new box has started."""
        snapshot = self.snapshot()
        box = self._fork_box(snapshot)
        try:
            box.start()
        except BaseException:
            box.stop()
            raise
        finally:
            self._drop_snapshot(snapshot)
        return box  # type: ignore[return-value]

    async def afork(self: _Box) -> _Box:
        """Async version of `fork`."""
        snapshot = await self.asnapshot()
        box = self._fork_box(snapshot)
        try:
            await box.astart()
        except BaseException:
            await box.astop()
            raise
        finally:
            await self._adrop_snapshot(snapshot)
        return box  # type: ignore[return-value]

    def status(self) -> CodeBoxStatus:
        """``"running"``, ``"starting"`` or ``"stopped"``, as this box knows it: no I/O,
        never a side effect."""
        return self._ops.status()

    async def astatus(self) -> CodeBoxStatus:
        """Async version of `status`."""
        return self._ops.status()

    # -- code -------------------------------------------------------------------------

    def _run_args(self, code: str | None, file_path: str | os.PathLike[str] | None,
                  timeout: float | None) -> tuple[str, float | None]:
        return code_to_run(code, file_path), check_timeout(timeout, self.settings.run_timeout)

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
            ValueError: Both or neither of ``code`` and ``file_path`` were given, or the
                timeout is not a positive number.
            CodeBoxError: The box itself failed (a failure of the code is ``output.error``).
        """
        op = self._ops.run(*self._run_args(code, file_path, timeout), on_output is not None)
        return self._call(op, on_output, interruptible=True)

    async def arun(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Async version of `run`."""
        op = self._ops.run(*self._run_args(code, file_path, timeout), on_output is not None)
        return await self._acall(op, on_output, interruptible=True)

    def stream(self, code: str, *, timeout: float | None = None) -> RunStream:
        """Run code and yield its output chunks as they are produced: exactly the chunks
        `run` returns, the closing error (a timeout, a death) included.

        The stream is an iterator and a context manager (``with box.stream(code) as s:``);
        ``s.result`` is the `CodeBoxOutput` once it is over. Leaving it early (``close()``,
        the end of the ``with`` block) interrupts the run. A stream left unfinished does
        not keep the box: the next call of the same thread or task closes it first.
        """
        args = self._run_args(code, None, timeout)
        return RunStream(self, lambda: self._ops.run(*args, True))

    def astream(self, code: str, *, timeout: float | None = None) -> AsyncRunStream:
        """Async version of `stream` (``async for``, ``async with``, ``aclose()``)."""
        args = self._run_args(code, None, timeout)
        return AsyncRunStream(self, lambda: self._ops.run(*args, True))

    def interrupt(self) -> CodeBoxStatus:
        """Interrupt the running execution (state is kept); callable from another thread.

        With nothing running, nothing is sent (the status ``"interrupted"`` is returned, or
        the box's status if it was never started).
        """
        hold = self._lease.begin_interrupt()
        if hold is None:
            status = self._ops.status()
            return status if status == "stopped" else CodeBoxStatus(status="interrupted")
        try:
            self._side_interrupt()
        finally:
            self._lease.end_interrupt()
        return CodeBoxStatus(status="interrupted")

    async def ainterrupt(self) -> CodeBoxStatus:
        """Async version of `interrupt`."""
        return await asyncio.to_thread(self.interrupt)

    def restart(self) -> CodeBoxStatus:
        """Restart the kernel: variables are gone, files are kept."""
        return self._call(self._ops.restart())

    async def arestart(self) -> CodeBoxStatus:
        """Async version of `restart`."""
        return await self._acall(self._ops.restart())

    def _install_op(self, names: tuple[str, ...], timeout: float | None) -> Op[CodeBoxStatus]:
        limit = check_timeout(timeout, INSTALL_TIMEOUT)
        assert limit is not None
        return self._ops.install(check_package_names(names), limit)

    def install(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Install packages with pip into the box (default timeout: 600 s).

        Raises:
            ValueError: No package names, an empty one, or one that starts with ``-``.
            CodeBoxError: The install failed; the message carries pip's.
        """
        return self._call(self._install_op(package_names, timeout), interruptible=True)

    async def ainstall(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Async version of `install`."""
        return await self._acall(self._install_op(package_names, timeout), interruptible=True)

    # -- files ------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        limit = check_timeout(timeout, self.settings.timeout)
        assert limit is not None
        return limit

    def _upload_op(self, file_name: str, content: Content, timeout: float | None,
                   on_progress: OnProgress | None) -> Op[CodeBoxFile]:
        name, data = check_file_name(file_name), check_content(content)
        return self._ops.upload(name, data, self._timeout(timeout), on_progress)

    def upload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Write ``content`` to the relative path ``file_name`` in the box.

        ``on_progress(done_bytes, total_bytes)`` is called as the transfer goes on.

        Raises:
            CodeBoxError: The name is absolute, escapes with ``..`` or holds a NUL byte
                (nothing is written), or the transfer failed.
            ValueError: ``content`` is neither bytes nor text.
        """
        return self._call(self._upload_op(file_name, content, timeout, on_progress))

    async def aupload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Async version of `upload`."""
        return await self._acall(self._upload_op(file_name, content, timeout, on_progress))

    def _download_op(self, file_name: str, timeout: float | None,
                     on_progress: OnProgress | None) -> Op[CodeBoxFile]:
        return self._ops.download(check_file_name(file_name), self._timeout(timeout),
                                  on_progress)

    def download(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Read the file ``file_name`` from the box.

        ``on_progress(done_bytes, total_bytes)`` is called as the transfer goes on.

        Raises:
            CodeBoxNotFoundError: There is no such file (also a ``FileNotFoundError``).
        """
        return self._call(self._download_op(file_name, timeout, on_progress))

    async def adownload(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Async version of `download`."""
        return await self._acall(self._download_op(file_name, timeout, on_progress))

    def stream_download(self, file_name: str, *, timeout: float | None = None
                        ) -> DownloadStream:
        """Read the file ``file_name`` in pieces as they come, never holding it whole:
        iterate the stream for ``bytes``; ``open()`` returns its size first.

        Raises:
            CodeBoxNotFoundError: (from ``open()`` or the first read) There is no such file.
        """
        name, limit = check_file_name(file_name), self._timeout(timeout)
        return DownloadStream(self, lambda: self._ops.read(name, limit))

    def astream_download(self, file_name: str, *, timeout: float | None = None
                         ) -> AsyncDownloadStream:
        """Async version of `stream_download` (``await stream.open()``, ``async for``)."""
        name, limit = check_file_name(file_name), self._timeout(timeout)
        return AsyncDownloadStream(self, lambda: self._ops.read(name, limit))

    def list_files(self) -> list[CodeBoxFile]:
        """Every file in the box, recursively, with sizes, sorted by name."""
        return self._call(self._ops.list_files())

    async def alist_files(self) -> list[CodeBoxFile]:
        """Async version of `list_files`."""
        return await self._acall(self._ops.list_files())

    # -- file operations ----------------------------------------------------------------
    # Paths follow the rules of file names: relative, inside the box, no ``..``, no NUL.

    def remove(self, path: str) -> CodeBoxStatus:
        """Remove a file, or a directory with everything in it.

        Raises:
            CodeBoxNotFoundError: There is no such path (also a ``FileNotFoundError``).
            CodeBoxError: The path breaks the file-name rules.
        """
        return self._call(self._ops.remove(check_file_name(path)))

    async def aremove(self, path: str) -> CodeBoxStatus:
        """Async version of `remove`."""
        return await self._acall(self._ops.remove(check_file_name(path)))

    def rename(self, source: str, destination: str) -> CodeBoxFile:
        """Move a file or directory; the parents of ``destination`` are created, and a file
        already there is replaced. Returns the moved file under its new name.

        Raises:
            CodeBoxNotFoundError: There is no ``source``.
        """
        op = self._ops.rename(check_file_name(source), check_file_name(destination))
        return self._call(op)

    async def arename(self, source: str, destination: str) -> CodeBoxFile:
        """Async version of `rename`."""
        op = self._ops.rename(check_file_name(source), check_file_name(destination))
        return await self._acall(op)

    def make_dir(self, path: str) -> CodeBoxFile:
        """Create a directory and its parents; an existing directory is fine."""
        return self._call(self._ops.make_dir(check_file_name(path)))

    async def amake_dir(self, path: str) -> CodeBoxFile:
        """Async version of `make_dir`."""
        return await self._acall(self._ops.make_dir(check_file_name(path)))

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists at ``path``."""
        return self._call(self._ops.exists(check_file_name(path)))

    async def aexists(self, path: str) -> bool:
        """Async version of `exists`."""
        return await self._acall(self._ops.exists(check_file_name(path)))

    def file_info(self, path: str) -> CodeBoxFile:
        """A file or directory's ``size`` (None for a directory), ``is_dir`` and
        ``modified`` (UTC).

        Raises:
            CodeBoxNotFoundError: There is no such path (also a ``FileNotFoundError``).
        """
        return self._call(self._ops.file_info(check_file_name(path)))

    async def afile_info(self, path: str) -> CodeBoxFile:
        """Async version of `file_info`."""
        return await self._acall(self._ops.file_info(check_file_name(path)))

    # -- shell commands -------------------------------------------------------------------

    def _shell_args(self, command: Command, timeout: float | None, cwd: str | None,
                    env: Mapping[str, str] | None
                    ) -> tuple[str | list[str], float | None, str | None, dict[str, str]]:
        return (check_command(command), check_timeout(timeout, self.settings.run_timeout),
                check_cwd(cwd), check_env(env))

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
        op = self._ops.shell(*self._shell_args(command, timeout, cwd, env), on_output is not None)
        return self._call(op, on_output, interruptible=True)

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
        op = self._ops.shell(*self._shell_args(command, timeout, cwd, env), on_output is not None)
        return await self._acall(op, on_output, interruptible=True)

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
        args = self._shell_args(command, timeout, cwd, env)
        return CommandStream(self, lambda: self._ops.shell(*args, True))

    def astream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> AsyncCommandStream:
        """Async version of `stream_shell`."""
        args = self._shell_args(command, timeout, cwd, env)
        return AsyncCommandStream(self, lambda: self._ops.shell(*args, True))
