"""``CodeBox``: the client of the CodeBox REST API, over httpx, sync and async.

Every operation is written once, as a generator in `_ops`; a twin here hands it to the
sync or the async driver (`_drivers`). Using a key never imports the local machinery
(gateway, websockets): without a key, ``CodeBox(...)`` is a `LocalBox`, imported then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import httpx

from .._commands import (
    AsyncCommandStream,
    Command,
    CommandStream,
    check_command,
    check_cwd,
    check_env,
    check_timeout,
)
from .._paths import check_file_name
from .._streams import AsyncChunkStream, ChunkStream, StreamSlot
from .._tls import verify_for
from ..base import BaseBox, Content, OnOutput, OnProgress, code_to_run
from ..schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, CommandResult, OutputChunk
from ..settings import CodeBoxSettings
from . import _ops as ops
from ._drivers import AsyncDriver, Done, SyncDriver
from ._replies import session_id_of
from ._requests import check_package_names, prepare_upload
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ..local import LocalBox

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _wants_local(settings: CodeBoxSettings, local: bool) -> bool:
    return local or settings.api_key in (None, "", "local")


def _resolve(
    api_key: str | None,
    base_url: str | None,
    settings: CodeBoxSettings | None,
    timeout: float | None,
) -> CodeBoxSettings:
    base = settings if settings is not None else CodeBoxSettings()
    update = {"api_key": api_key, "base_url": base_url, "timeout": timeout}
    update = {k: v for k, v in update.items() if v is not None}
    return base.model_copy(update=update) if update else base


def _local_box(settings: CodeBoxSettings, env: Mapping[str, str] | None) -> LocalBox:
    from ..local import LocalBox  # only now: a key's user never loads the local machinery

    return LocalBox(settings=settings, env=env)


class CodeBox(BaseBox):
    """A box on a CodeBox REST API server (see ``docs/protocol.md``); without a key, a
    `LocalBox`.

    The session starts with `start` (or lazily, once, with the first other operation,
    however many threads or tasks race it) and its id is `session_id`, the server's integer
    id in decimal. Extensions (rich results, streaming, interrupt) are used where the
    server announces them; a core-only server works too. Requests that cannot run code
    twice are retried (``settings.max_retries``).

    Args:
        api_key: The API key (default: ``settings.api_key``, i.e. ``CODEBOX_API_KEY``).
            With none, or ``"local"``, the result is a `LocalBox`.
        base_url: The API's base URL (default: ``settings.base_url``).
        session_id: Attach to this existing session instead of starting one.
        settings: A `CodeBoxSettings` (default: read from the environment and ``.env``).
        timeout: Seconds allowed for one HTTP request (default: ``settings.timeout``).
            A run is allowed its own ``timeout`` plus a margin, and no limit without one.
        local: Return a `LocalBox` whatever the key.
        env: Environment variables set in the session's kernel at start (extension
            ``start-options``).
    """

    # What a call gives, for type checkers that read ``__new__`` (pyright does; mypy
    # requires a subclass here and falls back to CodeBox): a key makes a CodeBox, "local"
    # or ``local=True`` a LocalBox, no key either (the environment may hold one).
    @overload
    def __new__(  # type: ignore[misc]
        cls,
        api_key: Literal["local"],
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> LocalBox: ...

    @overload
    def __new__(  # type: ignore[misc]
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        *,
        local: Literal[True],
        env: Mapping[str, str] | None = None,
    ) -> LocalBox: ...

    @overload
    def __new__(
        cls,
        api_key: str,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: Literal[False] = False,
        env: Mapping[str, str] | None = None,
    ) -> CodeBox: ...

    @overload
    def __new__(  # type: ignore[misc]
        cls,
        api_key: None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> CodeBox | LocalBox: ...

    def __new__(
        cls,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Any:
        resolved = _resolve(api_key, base_url, settings, timeout)
        if _wants_local(resolved, local):
            return _local_box(resolved, env)
        return super().__new__(cls)

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        session_id: int | str | uuid.UUID | None = None,
        settings: CodeBoxSettings | None = None,
        timeout: float | None = None,
        local: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings=_resolve(api_key, base_url, settings, timeout))
        self._state = ops.ClientState(
            session_id=None if session_id is None else session_id_of(session_id),
            started=session_id is not None,
            retry=RetryPolicy(max_retries=self.settings.max_retries),
            env=check_env(env),
        )
        self._sync = SyncDriver(self._new_client, self.settings.timeout)
        self._async: AsyncDriver | None = None
        self._lock = threading.Lock()  # guards the fields below and `_async`
        self._start_lock = threading.Lock()
        self._astart_lock: asyncio.Lock | None = None
        self._slot = StreamSlot()
        # Tests put an in-memory server here (httpx.MockTransport, httpx.ASGITransport).
        self._transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None

    @classmethod
    def from_id(cls, session_id: int | str | uuid.UUID, **kwargs: Any) -> BaseBox:
        """Reattach to a session that exists on the server (nothing is sent until used).

        Without an API key, return the `LocalBox` of this process with that id.

        Args:
            session_id: An int, its decimal string, or a UUID (``UUID(int=n)`` is ``n``).
            **kwargs: The arguments of `CodeBox` (``api_key``, ``base_url``, ...).

        Raises:
            ValueError: ``session_id`` is not a session id.
            CodeBoxError: No key, and this process has no `LocalBox` with that id.
        """
        resolved = _resolve(kwargs.get("api_key"), None, kwargs.get("settings"), None)
        if _wants_local(resolved, kwargs.get("local", False)):
            from ..local import LocalBox

            return LocalBox.from_id(str(session_id))
        return cls(**{**kwargs, "session_id": session_id})

    @property
    def session_id(self) -> str | None:
        """The server's id of the session (decimal string), once started or attached."""
        return self._state.session_id

    def _state_name(self) -> str:
        if self._state.started:
            return "started"
        return "stopped" if self._state.session_id else "new"

    # -- plumbing: clients, drivers, the start lock ------------------------------------

    def _client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "base_url": self.settings.base_url,
            "headers": {"Authorization": f"Bearer {self.settings.api_key}"},
            "timeout": httpx.Timeout(self.settings.timeout),
            "verify": verify_for(self.settings.base_url),
        }
        if self._transport is not None:
            args["transport"] = self._transport
        return args

    def _new_client(self) -> httpx.Client:
        return httpx.Client(**self._client_args())

    def _adriver(self) -> AsyncDriver:
        """The async driver of the running event loop (an AsyncClient lives on one loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            driver = self._async
            if driver is None or driver.loop is not loop:
                if driver is not None:
                    logger.debug("%r: new event loop, new AsyncClient", self)
                    self._drop_async(driver)
                driver = self._async = AsyncDriver(
                    lambda: httpx.AsyncClient(**self._client_args()), self.settings.timeout
                )
                self._astart_lock = asyncio.Lock()
            return driver

    def _ensure_started(self) -> None:
        if not self._state.started:
            with self._start_lock:  # one session, however many threads race here
                if not self._state.started:
                    self._sync.run(ops.start(self._state))

    async def _aensure_started(self) -> None:
        if not self._state.started:
            driver = self._adriver()
            assert self._astart_lock is not None
            async with self._astart_lock:  # one session, however many tasks race here
                if not self._state.started:
                    await driver.run(ops.start(self._state))

    def _call(self, op: ops.Op[T], on_output: OnOutput | None = None, *, start: bool = True) -> T:
        self._slot.settle()
        if start:
            self._ensure_started()
        return self._sync.run(op, on_output)

    async def _acall(
        self, op: ops.Op[T], on_output: OnOutput | None = None, *, start: bool = True
    ) -> T:
        await self._slot.asettle()
        if start:
            await self._aensure_started()
        return await self._adriver().run(op, on_output)

    def _run_op(
        self,
        code: str | None,
        file_path: str | os.PathLike[str] | None,
        timeout: float | None,
        streaming: bool,
    ) -> ops.Op[CodeBoxOutput]:
        limit = timeout if timeout is not None else self.settings.run_timeout
        return ops.run(self._state, code_to_run(code, file_path), limit, streaming=streaming)

    @staticmethod
    def _drop_async(driver: AsyncDriver) -> None:
        """Close an async driver's client from blocking code, where its loop allows."""
        loop = driver.loop
        if driver.client is None or loop.is_closed():
            return  # nothing open, or its connections ended with their loop
        if loop.is_running():
            loop.call_soon_threadsafe(lambda: loop.create_task(driver.close()))
        else:
            loop.run_until_complete(driver.close())

    # -- clients ----------------------------------------------------------------------

    def close(self) -> None:
        """Release the HTTP clients (the session stays; use `stop` to end it)."""
        self._slot.settle()
        with self._lock:
            driver, self._async = self._async, None
        self._sync.close()
        if driver is not None:
            self._drop_async(driver)

    async def aclose(self) -> None:
        """Async version of `close`."""
        await self._slot.asettle()
        with self._lock:
            driver, self._async = self._async, None
        self._sync.close()
        if driver is not None and driver.loop is asyncio.get_running_loop():
            await driver.close()
        elif driver is not None:
            self._drop_async(driver)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> CodeBoxStatus:
        """Start a session on the server (idempotent). Returns the status ``"started"``."""
        self._slot.settle()
        self._ensure_started()
        return CodeBoxStatus(status="started")

    async def astart(self) -> CodeBoxStatus:
        """Async version of `start`."""
        await self._slot.asettle()
        await self._aensure_started()
        return CodeBoxStatus(status="started")

    def stop(self) -> CodeBoxStatus:
        """Stop the session on the server (idempotent) and release the HTTP clients."""
        try:
            return self._call(ops.stop(self._state), start=False)
        finally:
            self.close()

    async def astop(self) -> CodeBoxStatus:
        """Async version of `stop`."""
        try:
            return await self._acall(ops.stop(self._state), start=False)
        finally:
            await self.aclose()

    def status(self) -> CodeBoxStatus:
        """The session's status on the server; ``"stopped"`` without asking if it was never
        started or was stopped by this box."""
        return self._sync.run(ops.status(self._state))

    async def astatus(self) -> CodeBoxStatus:
        """Async version of `status`."""
        return await self._adriver().run(ops.status(self._state))

    # -- code -------------------------------------------------------------------------

    def run(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Run code (or the local file ``file_path``) in the session; see `BaseBox.run`.

        With ``on_output`` on a server that streams, chunks are passed on as they arrive;
        otherwise after the run. On a core-only server ``timeout`` is not sent: the HTTP
        read waits ``timeout`` plus a margin and then raises `CodeBoxTimeoutError`.
        """
        return self._call(self._run_op(code, file_path, timeout, on_output is not None),
                          on_output)

    async def arun(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        """Async version of `run`."""
        return await self._acall(self._run_op(code, file_path, timeout, on_output is not None),
                                 on_output)

    def stream(self, code: str, *, timeout: float | None = None) -> ChunkStream:
        """Run code and yield its chunks as they are produced (NDJSON where the server
        announces ``stream``; otherwise the chunks of a plain run, after it); see
        `BaseBox.stream`. Leaving early interrupts the run where the server offers
        ``interrupt`` (and closes the answer, which the server takes as an interrupt)."""
        op = self._run_op(code, None, timeout, True)

        def begin() -> Any:
            self._ensure_started()
            return self._sync.steps(op)

        return ChunkStream(self._slot, begin)

    def astream(self, code: str, *, timeout: float | None = None) -> AsyncChunkStream:
        """Async version of `stream`."""
        op = self._run_op(code, None, timeout, True)

        async def begin() -> AsyncGenerator[OutputChunk | Done, None]:
            await self._aensure_started()
            return self._adriver().steps(op)

        return AsyncChunkStream(self._slot, begin, lambda item: isinstance(item, Done))

    def interrupt(self) -> CodeBoxStatus:
        """Interrupt the session's running execution (extension ``interrupt``); callable
        from another thread while a run is in progress. Without a session there is nothing
        to interrupt: nothing is sent and the status is ``"stopped"``.

        Raises:
            CodeBoxError: The server does not support it.
        """
        return self._sync.run(ops.interrupt(self._state))

    async def ainterrupt(self) -> CodeBoxStatus:
        """Async version of `interrupt`."""
        return await self._adriver().run(ops.interrupt(self._state))

    def restart(self) -> CodeBoxStatus:
        """Restart the session's kernel: variables are gone, files are kept."""
        return self._call(ops.restart(self._state))

    async def arestart(self) -> CodeBoxStatus:
        """Async version of `restart`."""
        return await self._acall(ops.restart(self._state))

    def install(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Install packages with pip in the session (one request per package on a core-only
        server). ``timeout``: seconds per request (default: the box's ``timeout``).

        Raises:
            ValueError: No package names, or an empty one.
            CodeBoxError: The install failed.
        """
        return self._call(ops.install(self._state, check_package_names(package_names), timeout))

    async def ainstall(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        """Async version of `install`."""
        names = check_package_names(package_names)
        return await self._acall(ops.install(self._state, names, timeout))

    # -- files ------------------------------------------------------------------------

    def upload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Upload ``content`` as the file ``file_name`` of the session; see `BaseBox.upload`.

        ``timeout``: seconds for the transfer (default: the box's ``timeout``).
        """
        name, data = prepare_upload(file_name, content)
        return self._call(ops.upload(self._state, name, data, timeout, on_progress))

    async def aupload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Async version of `upload`."""
        name, data = prepare_upload(file_name, content)
        return await self._acall(ops.upload(self._state, name, data, timeout, on_progress))

    def download(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Download the file ``file_name`` of the session; its name is the one the server's
        ``Content-Disposition`` gives, else ``file_name``.

        Raises:
            CodeBoxNotFoundError: There is no such file.
        """
        name = check_file_name(file_name)
        return self._call(ops.download(self._state, name, timeout, on_progress))

    async def adownload(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        """Async version of `download`."""
        name = check_file_name(file_name)
        return await self._acall(ops.download(self._state, name, timeout, on_progress))

    def list_files(self) -> list[CodeBoxFile]:
        """The files of the session, sorted by name (sizes where the server gives them)."""
        return self._call(ops.list_files(self._state))

    async def alist_files(self) -> list[CodeBoxFile]:
        """Async version of `list_files`."""
        return await self._acall(ops.list_files(self._state))

    # -- file operations (extension ``file-ops``) ------------------------------------------

    def remove(self, path: str) -> CodeBoxStatus:
        return self._call(ops.remove(self._state, check_file_name(path)))

    async def aremove(self, path: str) -> CodeBoxStatus:
        return await self._acall(ops.remove(self._state, check_file_name(path)))

    def rename(self, source: str, destination: str) -> CodeBoxFile:
        paths = check_file_name(source), check_file_name(destination)
        return self._call(ops.rename(self._state, *paths))

    async def arename(self, source: str, destination: str) -> CodeBoxFile:
        paths = check_file_name(source), check_file_name(destination)
        return await self._acall(ops.rename(self._state, *paths))

    def make_dir(self, path: str) -> CodeBoxFile:
        return self._call(ops.make_dir(self._state, check_file_name(path)))

    async def amake_dir(self, path: str) -> CodeBoxFile:
        return await self._acall(ops.make_dir(self._state, check_file_name(path)))

    def exists(self, path: str) -> bool:
        return self._call(ops.exists(self._state, check_file_name(path)))

    async def aexists(self, path: str) -> bool:
        return await self._acall(ops.exists(self._state, check_file_name(path)))

    def file_info(self, path: str) -> CodeBoxFile:
        return self._call(ops.file_info(self._state, check_file_name(path)))

    async def afile_info(self, path: str) -> CodeBoxFile:
        return await self._acall(ops.file_info(self._state, check_file_name(path)))

    # -- shell commands (extension ``shell``) ---------------------------------------------

    def _shell_op(self, command: Command, timeout: float | None, cwd: str | None,
                  env: Mapping[str, str] | None, streaming: bool) -> ops.Op[CommandResult]:
        args = {"command": check_command(command), "cwd": check_cwd(cwd),
                "env": check_env(env),
                "timeout": check_timeout(timeout) or self.settings.run_timeout}
        return ops.shell(self._state, args, streaming=streaming)

    def shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OnOutput | None = None,
    ) -> CommandResult:
        """Run a command in the session (extension ``shell``); see `BaseBox.shell`. With
        ``on_output`` the output streams as it comes.

        Raises:
            CodeBoxError: The server does not support shell commands.
        """
        op = self._shell_op(command, timeout, cwd, env, on_output is not None)
        return self._call(op, on_output)

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
        op = self._shell_op(command, timeout, cwd, env, on_output is not None)
        return await self._acall(op, on_output)

    def stream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandStream:
        op = self._shell_op(command, timeout, cwd, env, True)

        def begin() -> Any:
            self._ensure_started()
            return self._sync.steps(op)

        return CommandStream(self._slot, begin)

    def astream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> AsyncCommandStream:
        op = self._shell_op(command, timeout, cwd, env, True)

        async def begin() -> AsyncGenerator[OutputChunk | Done, None]:
            await self._aensure_started()
            return self._adriver().steps(op)

        return AsyncCommandStream(self._slot, begin)
