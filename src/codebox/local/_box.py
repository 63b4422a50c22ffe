"""``LocalBox``: code runs in a Jupyter kernel served by a Jupyter Kernel Gateway.

By default the box spawns a gateway on 127.0.0.1 (one per process, shared by its boxes);
with ``gateway_url`` it uses a running Kernel Gateway or Enterprise Gateway instead, and
then everything, files included, goes through the gateway and the kernel.

A plain kernel keeps the user's code and state out of the caller's process, but it runs as
the same user on the same machine: it is not a security boundary. ``sandbox=True`` (or a
`Sandbox` policy) runs the kernel in a bubblewrap sandbox that is one (see `_sandbox`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import logging
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from .._commands import AsyncCommandStream, Command, CommandStream, check_env, check_timeout
from .._streams import AsyncChunkStream, ChunkStream, StreamSlot
from ..base import BaseBox, Content, OnOutput, OnProgress, code_to_run
from ..errors import CodeBoxError, SandboxUnavailableError
from ..sandbox import Sandbox, resolve
from ..schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, CommandResult
from ..settings import CodeBoxSettings
from . import _kernel_ops as ops
from . import _sandbox
from ._drivers import AsyncDriver, Done, SyncDriver
from ._gateway import GatewayAddress, shared_gateway

INSTALL_TIMEOUT = 600.0
_STOP_GRACE = 1.0
"""Seconds stop() lets a run in progress elsewhere end on an interrupt before it deletes the
kernel under it (at most ``interrupt_timeout``)."""
_PROBE = ThreadPoolExecutor(1, thread_name_prefix="codebox-sandbox-probe")

logger = logging.getLogger(__name__)


def _acquire(driver: AsyncDriver, seconds: float) -> bool:
    """Take an async driver's lock from another thread, within ``seconds``. The waiting is
    done on the driver's loop: only there can a lock taken at the last moment be told from
    one not taken (cancelling from here could lose it, taken, forever)."""
    future = asyncio.run_coroutine_threadsafe(_take(driver.lock, seconds), driver.loop)
    try:
        return future.result(seconds + 5.0)
    except concurrent.futures.TimeoutError:
        # Its loop does not run: should it run again, give back what it takes then.
        future.add_done_callback(lambda taken: _give_back(taken, driver))
        return False


def _give_back(taken: concurrent.futures.Future[bool], driver: AsyncDriver) -> None:
    if not taken.cancelled() and taken.exception() is None and taken.result():
        driver.loop.call_soon_threadsafe(driver.lock.release)


async def _take(lock: asyncio.Lock, seconds: float) -> bool:
    taking = asyncio.ensure_future(lock.acquire())
    await asyncio.wait({taking}, timeout=seconds)
    taking.cancel()  # no effect if it was taken
    try:
        return await taking
    except asyncio.CancelledError:
        return False


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a name, as in some containers
        return "codebox"


class LocalBox(BaseBox):
    """A box whose code runs in a Jupyter kernel, over the Kernel Gateway REST API and the
    kernel websocket.

    Args:
        working_dir: The directory the kernel runs in and that file names are relative to.
            Default: a fresh private temporary directory, deleted on `stop`.
        kernel_name: The kernelspec to start (default ``"python3"``).
        gateway_url: A running Kernel Gateway or Enterprise Gateway to use instead of
            spawning one.
        gateway_token: The auth token of that gateway.
        env: Environment variables set in the kernel at start (and after every restart):
            the code and every command it runs see them.
        settings: Settings for this box (default: read from ``CODEBOX_*`` and ``.env``).
        sandbox: Run the kernel in a sandbox: ``True`` (the default `Sandbox` policy), a
            `Sandbox`, or ``False``; ``None`` takes ``settings.sandbox``. With a spawned
            gateway it is built here; with ``gateway_url`` that gateway needs codebox and
            its ``codebox-sandbox`` kernelspec.

    Raises:
        SandboxUnavailableError: (at start) A sandbox was asked for and this machine cannot
            run one; never a silent fallback to a plain kernel.
    """

    _live: ClassVar[weakref.WeakValueDictionary[str, LocalBox]] = weakref.WeakValueDictionary()

    def __init__(
        self,
        *,
        working_dir: str | os.PathLike[str] | None = None,
        kernel_name: str | None = None,
        gateway_url: str | None = None,
        gateway_token: str | None = None,
        env: Mapping[str, str] | None = None,
        settings: CodeBoxSettings | None = None,
        sandbox: bool | Sandbox | None = None,
    ) -> None:
        super().__init__(settings=settings)
        self._env = check_env(env)
        s = self.settings
        self._sandbox = resolve(sandbox, s.sandbox)
        self._gateway_url = (gateway_url or s.gateway_url or "").rstrip("/") or None
        self._gateway_token = gateway_token if gateway_token is not None else s.gateway_token
        wd = working_dir if working_dir is not None else s.working_dir
        self._working_dir = str(wd) if wd is not None else None
        self._kernel_name = kernel_name or s.kernel_name
        self._temp_dir: str | None = None
        self._holds_gateway = False
        self._state = ops.KernelState()
        self._sync = SyncDriver(self._gateway_address, self._release_gateway)
        self._sync_lock = threading.Lock()
        self._async: AsyncDriver | None = None
        self._slot = StreamSlot()  # the open stream, closed by the next operation
        self._session_id = uuid.uuid4().hex
        LocalBox._live[self._session_id] = self

    @classmethod
    def from_id(cls, session_id: str) -> LocalBox:
        """The box of this process with that ``session_id``.

        Raises:
            CodeBoxError: There is none.
        """
        box = cls._live.get(str(session_id))
        if box is None:
            raise CodeBoxError(f"no LocalBox with session id {session_id!r} in this process")
        return box

    @property
    def kernel_id(self) -> str | None:
        """The gateway's id of the box's current kernel."""
        return self._state.kernel_id

    @property
    def sandbox(self) -> Sandbox | None:
        """The box's sandbox policy (None: a plain kernel)."""
        return self._sandbox

    @property
    def working_dir(self) -> str | None:
        """The kernel's working directory (known once started)."""
        return self._state.root

    def _state_name(self) -> str:
        return self._state.status

    # -- plumbing: the gateway, the config, the two drivers ------------------------------

    def _policy(self) -> dict[str, Any] | None:
        if self._sandbox is None:
            return None
        policy = self._sandbox.policy()
        if self._working_dir is not None and self._gateway_url is None:
            policy["work_dir"] = str(Path(self._working_dir).expanduser().resolve())
        return policy

    def _gateway_address(self, refused: GatewayAddress | None = None) -> GatewayAddress:
        if self._gateway_url is not None:
            return GatewayAddress(self._gateway_url, self._gateway_token)
        if self._holds_gateway:
            return shared_gateway.current(self.settings, self._policy(), refused=refused)
        # Whether bwrap works here is found out (once per process) while the gateway starts.
        probe = _PROBE.submit(_sandbox.check) if self._sandbox is not None else None
        address = shared_gateway.acquire(self.settings, self._policy())
        self._holds_gateway = True
        if probe is not None:
            try:
                probe.result()
            except _sandbox.Unavailable as exc:
                self._release_gateway()
                raise SandboxUnavailableError(f"cannot sandbox the kernel: {exc}") from None
        return address

    def _release_gateway(self) -> None:
        if self._holds_gateway:
            self._holds_gateway = False
            shared_gateway.release()

    def _config(self) -> ops.KernelConfig:
        root = self._working_dir
        if root is not None and self._gateway_url is None:
            root = str(Path(root).expanduser().resolve())
        elif root is None and self._gateway_url is None and self._sandbox is None:
            # A spawned gateway runs on this machine: the box owns a local temporary root.
            # (A sandboxed kernel has one of its own, made and removed with it.)
            if self._temp_dir is None:
                self._temp_dir = tempfile.mkdtemp(prefix="codebox-")
            root = self._temp_dir
        s = self.settings
        return ops.KernelConfig(
            kernel_name=self._kernel_name,
            root=root,
            timeout=s.timeout,
            start_timeout=s.start_timeout,
            interrupt_timeout=s.interrupt_timeout,
            output_limit=s.output_limit,
            chunk_size=s.chunk_size,
            env=self._env,
            gateway_env=self._gateway_env(),
            sandbox=self._policy(),
        )

    def _gateway_env(self) -> dict[str, str] | None:
        """What a kernel start tells a gateway given by URL: the box's ``env`` (set in the
        kernel at start in any case; a gateway passes it on where its operator allows), who
        the kernel is for (Enterprise Gateway needs ``KERNEL_USERNAME``) and the
        deployment's ``KERNEL_*``. ``KERNEL_*`` names come from the settings only: on
        Enterprise Gateway they choose the kernel's user, image, namespace, uid — the
        deployment's choices, never a caller's (``codebox serve`` passes clients' ``env``)."""
        if self._gateway_url is None:
            return None  # the spawned gateway: the kernel inherits our environment
        s = self.settings
        own = {k: v for k, v in self._env.items() if not k.startswith("KERNEL_")}
        return {**own, **s.kernel_env, "KERNEL_USERNAME": s.kernel_username or _os_user()}

    def _use_sync(self) -> SyncDriver:
        if self._async is not None and self._async.connected:
            self._async.abort()  # one websocket at a time: the async one is idle now
        return self._sync

    def _call(self, op: ops.Op, on_output: OnOutput | None = None) -> Any:
        with self._sync_lock:
            self._slot.settle()
            return self._use_sync().run(op, on_output)

    def _driver(self) -> AsyncDriver:
        loop = asyncio.get_running_loop()
        driver = self._async
        if driver is None or driver.loop is not loop:
            if driver is not None:
                driver.abort()  # made on another (maybe closed) loop: start over here
            driver = self._async = AsyncDriver(self._gateway_address, self._release_gateway)
        if self._sync.connected:
            self._sync.close()
        return driver

    async def _acall(self, op: ops.Op, on_output: OnOutput | None = None) -> Any:
        driver = self._driver()
        async with driver.lock:
            await self._slot.asettle()
            return await driver.run(op, on_output)

    def _stopped(self) -> CodeBoxStatus:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        return ops.status(self._state)

    def _stop_op(self) -> ops.Op:
        return ops.stop(self._state, self._config(), remove_root=self._kernel_removes_root())

    def _kernel_removes_root(self) -> bool:
        # Only where the kernel made the root (a remote gateway; a sandbox's own directory
        # goes with its kernel).
        return self._working_dir is None and self._gateway_url is not None and self._sandbox is None

    def _run_timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.settings.run_timeout

    def _run_op(
        self, code: str | None, file_path: str | os.PathLike[str] | None, timeout: float | None
    ) -> ops.Op:
        return ops.execute(self._state, self._config(), code_to_run(code, file_path),
                           self._run_timeout(timeout))

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> CodeBoxStatus:
        return self._call(ops.start(self._state, self._config()))

    async def astart(self) -> CodeBoxStatus:
        return await self._acall(ops.start(self._state, self._config()))

    def stop(self) -> CodeBoxStatus:
        try:
            if not self._sync_lock.acquire(blocking=False):
                self._state.stopping = True  # the run must not start a kernel in its place
                self._end_the_run(lambda seconds: self._sync_lock.acquire(timeout=seconds))
            try:
                self._slot.settle()
                self._use_sync().run(self._stop_op())
                self._sync.close()
            finally:
                self._sync_lock.release()
        finally:
            self._state.stopping = False
        return self._stopped()

    async def astop(self) -> CodeBoxStatus:
        driver = self._driver()
        if driver.lock.locked():
            self._state.stopping = True  # the run must not start a kernel in its place
            ending = asyncio.ensure_future(asyncio.to_thread(
                self._end_the_run, lambda seconds: _acquire(driver, seconds)))
            try:
                await asyncio.shield(ending)
            except asyncio.CancelledError:
                # The thread goes on; when it ends, undo what it did for a stop that is gone.
                ending.add_done_callback(lambda done: self._stop_abandoned(done, driver))
                raise
            except BaseException:
                self._state.stopping = False
                raise
        else:
            await driver.lock.acquire()
        try:
            await self._slot.asettle()
            await driver.run(self._stop_op())
            await driver.close()
        finally:
            driver.lock.release()
            self._state.stopping = False
        return self._stopped()

    def _stop_abandoned(self, ending: asyncio.Future[None], driver: AsyncDriver) -> None:
        """``ending`` (`_end_the_run` for an astop() that was cancelled) took the lock unless
        it failed: give it back, and let the box start kernels again."""
        self._state.stopping = False
        if not ending.cancelled() and ending.exception() is None:
            driver.lock.release()

    def _end_the_run(self, take: Callable[[float], bool]) -> None:
        """Take the box's lock from a run (or stream) in another thread or task, so that
        `stop` never waits for it: interrupt the run; if it ignores that, delete its kernel
        from under it.

        Raises:
            CodeBoxError: The run still holds the box.
        """
        grace = self.settings.interrupt_timeout
        if not self._kernel_removes_root():
            # Its kernel goes anyway: wait only as long as a run that heeds the interrupt
            # needs to end cleanly.
            grace = min(grace, _STOP_GRACE)
        for end in (self.interrupt, self._delete_kernel):
            try:
                end()
            except CodeBoxError as exc:
                logger.warning("%r: could not end the run in progress: %s", self, exc)
            if take(grace):
                return
        if not take(self.settings.timeout):
            raise CodeBoxError("stop(): an operation in progress holds the box and does not end")

    def _delete_kernel(self) -> None:
        """Delete the kernel over a connection of its own (the box's is busy), and cut the
        box's websockets, so that the run waiting on them ends."""
        st = self._state
        if st.address is not None and st.kernel_id is not None:
            driver = SyncDriver(self._gateway_address, lambda: None)
            try:
                driver.run(ops.http(st, "delete the kernel", "DELETE",
                                    f"/api/kernels/{st.kernel_id}"))
            finally:
                driver.close()
        self._sync.drop_connection()
        if self._async is not None:
            self._async.abort()

    def _adopt(self, kernel_id: str, root: str | None) -> None:
        """Take over a kernel already set up on the box's gateway (given by URL) — one a
        box of an earlier process started. A kernel that is gone by then is replaced on
        first use, and the next run says its state was lost."""
        if self._gateway_url is None:
            raise CodeBoxError("only a box on a gateway given by URL can take over a kernel")
        st = self._state
        st.address = self._gateway_address()
        st.kernel_id, st.root, st.needs_setup, st.status = kernel_id, root, False, "running"

    async def _adetach(self) -> None:
        """Close the box's connections and forget its kernel, which keeps running."""
        if self._async is not None:
            await self._async.close()
        self._sync.close()
        self._state = ops.KernelState()

    def status(self) -> CodeBoxStatus:
        return ops.status(self._state)

    async def astatus(self) -> CodeBoxStatus:
        return ops.status(self._state)

    # -- code --------------------------------------------------------------------------

    def run(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        return self._call(self._run_op(code, file_path, timeout), on_output)

    async def arun(
        self,
        code: str | None = None,
        *,
        file_path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
    ) -> CodeBoxOutput:
        return await self._acall(self._run_op(code, file_path, timeout), on_output)

    def stream(self, code: str, *, timeout: float | None = None) -> ChunkStream:
        op = self._run_op(code, None, timeout)
        return ChunkStream(self._slot, lambda: self._use_sync().steps(op),
                           lambda: self._sync_lock)

    def astream(self, code: str, *, timeout: float | None = None) -> AsyncChunkStream:
        op = self._run_op(code, None, timeout)

        async def begin() -> AsyncGenerator[Any, None]:
            return self._driver().steps(op)

        return AsyncChunkStream(self._slot, begin, lambda item: isinstance(item, Done),
                                lambda: self._driver().lock)

    def interrupt(self) -> CodeBoxStatus:
        # No lock: it exists to stop a run that holds it. No kernel: nothing to interrupt.
        if self._state.kernel_id is None:
            return ops.status(self._state)
        if not self._busy():
            return CodeBoxStatus(status="interrupted")
        return self._sync.run(ops.interrupt(self._state, self._config()))

    async def ainterrupt(self) -> CodeBoxStatus:
        if self._state.kernel_id is None:
            return ops.status(self._state)
        # As interrupt() does, from a thread: an HTTP request, on no websocket (switching the
        # box to its async driver would cut a sync run's connection).
        return await asyncio.to_thread(self.interrupt)

    def _busy(self) -> bool:
        """Whether an operation or an open stream holds the box. With nothing running, an
        interrupt is not sent: a sandboxed kernel takes it as a message, which may arrive
        after the next run has begun, and interrupt that."""
        return (self._sync_lock.locked() or self._slot.taken
                or (self._async is not None and self._async.lock.locked()))

    def restart(self) -> CodeBoxStatus:
        return self._call(ops.restart(self._state, self._config()))

    async def arestart(self) -> CodeBoxStatus:
        return await self._acall(ops.restart(self._state, self._config()))

    def install(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        op = ops.install(self._state, self._config(), package_names, timeout or INSTALL_TIMEOUT)
        return self._call(op)

    async def ainstall(self, *package_names: str, timeout: float | None = None) -> CodeBoxStatus:
        op = ops.install(self._state, self._config(), package_names, timeout or INSTALL_TIMEOUT)
        return await self._acall(op)

    # -- files -------------------------------------------------------------------------

    def upload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        op = ops.upload(self._state, self._config(), file_name, content,
                        timeout or self.settings.timeout, on_progress)
        return self._call(op)

    async def aupload(
        self, file_name: str, content: Content, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        op = ops.upload(self._state, self._config(), file_name, content,
                        timeout or self.settings.timeout, on_progress)
        return await self._acall(op)

    def download(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        op = ops.download(self._state, self._config(), file_name,
                          timeout or self.settings.timeout, on_progress)
        return self._call(op)

    async def adownload(
        self, file_name: str, *, timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> CodeBoxFile:
        op = ops.download(self._state, self._config(), file_name,
                          timeout or self.settings.timeout, on_progress)
        return await self._acall(op)

    async def _aread(
        self, file_name: str, *, timeout: float | None = None
    ) -> AsyncGenerator[int | bytes | memoryview, None]:
        """For the server: the file's size, then its content in chunks as the kernel sends
        them, holding the box for the whole read (close the generator to let go early).

        Raises:
            CodeBoxNotFoundError: There is no such file (before the size is yielded).
        """
        op = ops.read(self._state, self._config(), file_name, timeout or self.settings.timeout)
        driver = self._driver()
        async with driver.lock:
            await self._slot.asettle()
            steps = driver.steps(op)
            try:
                async for item in steps:
                    if isinstance(item, Done):
                        return
                    if "size" in item.content:
                        yield item.content["size"]
                    for part in item.buffers:
                        yield part
            finally:
                await steps.aclose()

    def list_files(self) -> list[CodeBoxFile]:
        return self._call(ops.list_files(self._state, self._config()))

    async def alist_files(self) -> list[CodeBoxFile]:
        return await self._acall(ops.list_files(self._state, self._config()))

    def remove(self, path: str) -> CodeBoxStatus:
        return self._call(ops.remove(self._state, self._config(), path))

    async def aremove(self, path: str) -> CodeBoxStatus:
        return await self._acall(ops.remove(self._state, self._config(), path))

    def rename(self, source: str, destination: str) -> CodeBoxFile:
        return self._call(ops.rename(self._state, self._config(), source, destination))

    async def arename(self, source: str, destination: str) -> CodeBoxFile:
        return await self._acall(ops.rename(self._state, self._config(), source, destination))

    def make_dir(self, path: str) -> CodeBoxFile:
        return self._call(ops.make_dir(self._state, self._config(), path))

    async def amake_dir(self, path: str) -> CodeBoxFile:
        return await self._acall(ops.make_dir(self._state, self._config(), path))

    def exists(self, path: str) -> bool:
        return self._call(ops.exists(self._state, self._config(), path))

    async def aexists(self, path: str) -> bool:
        return await self._acall(ops.exists(self._state, self._config(), path))

    def file_info(self, path: str) -> CodeBoxFile:
        return self._call(ops.file_info(self._state, self._config(), path))

    async def afile_info(self, path: str) -> CodeBoxFile:
        return await self._acall(ops.file_info(self._state, self._config(), path))

    # -- shell commands ----------------------------------------------------------------

    def _shell_op(self, command: Command, timeout: float | None, cwd: str | None,
                  env: Mapping[str, str] | None) -> ops.Op:
        limit = check_timeout(timeout) or self.settings.run_timeout
        return ops.shell(self._state, self._config(), command, timeout=limit, cwd=cwd, env=env)

    def shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OnOutput | None = None,
    ) -> CommandResult:
        return self._call(self._shell_op(command, timeout, cwd, env), on_output)

    async def ashell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OnOutput | None = None,
    ) -> CommandResult:
        return await self._acall(self._shell_op(command, timeout, cwd, env), on_output)

    def stream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandStream:
        op = self._shell_op(command, timeout, cwd, env)
        return CommandStream(self._slot, lambda: self._use_sync().steps(op),
                             lambda: self._sync_lock)

    def astream_shell(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> AsyncCommandStream:
        op = self._shell_op(command, timeout, cwd, env)

        async def begin() -> AsyncGenerator[Any, None]:
            return self._driver().steps(op)

        return AsyncCommandStream(self._slot, begin, lambda: self._driver().lock)
