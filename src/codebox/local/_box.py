"""``LocalBox``: code runs in a Jupyter kernel served by a Jupyter Kernel Gateway.

By default the box spawns a gateway on 127.0.0.1 (one per process, shared by its boxes);
with ``gateway_url`` it uses a running Kernel Gateway or Enterprise Gateway instead, and
then everything, files included, goes through the gateway and the kernel.

A plain kernel keeps the user's code and state out of the caller's process, but it runs as
the same user on the same machine: it is not a security boundary. ``sandbox=True`` (or a
`Sandbox` policy) runs the kernel in a bubblewrap sandbox that is one (see `_sandbox`).

Everything a box does is in the pure operations of `_lifecycle`, `_execution`,
`_transfers` and `_fileops`; this class only says where (the gateway, the config), hands
them to `BaseBox` (`_LocalOps`) and supplies the transports and the side channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from .. import _engine as engine
from .._checks import check_env
from .._engine import OnProgress, Op
from .._tls import verify_for
from ..base import BaseBox
from ..errors import (
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    SandboxUnavailableError,
)
from ..sandbox import Sandbox, resolve
from ..schema import (
    BoxInfo,
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    Snapshot,
)
from ..settings import CodeBoxSettings
from ..templates import Template
from ..templates._kernels import TemplateChoice
from . import _execution, _fileops, _lifecycle, _sandbox, _snapshot_ops, _transfers
from ._dialect import dialect_for, started_marker
from ._gateway import GatewayAddress, shared_gateway
from ._kernel import KernelConfig, KernelState, now
from ._lifetime import Usage
from ._snapshots import SnapshotDir, check_id, default_root
from ._transport import AsyncJupyterTransport, JupyterTransport

_STOP_GRACE = 1.0
"""Seconds stop() lets a run in progress end on an interrupt before it cuts the run's
connection (the kernel goes anyway), unless the kernel must clean up after itself."""
_PROBE = ThreadPoolExecutor(1, thread_name_prefix="codebox-sandbox-probe")

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        kernel_id: Attach to this kernel, already running (and set up by a box) on the
            gateway given by URL, instead of starting one; its directory stays the box's.
            A kernel gone by the first use is replaced, and the next run says the state
            was lost.
        env: Environment variables set in the kernel at start (and after every restart):
            the code and every command it runs see them.
        settings: Settings for this box (default: read from ``CODEBOX_*`` and ``.env``).
        sandbox: Run the kernel in a sandbox: ``True`` (the default `Sandbox` policy), a
            `Sandbox`, or ``False``; ``None`` takes ``settings.sandbox``. With a spawned
            gateway it is built here; with ``gateway_url`` that gateway needs codebox and
            its ``codebox-sandbox`` kernelspec.
        lifetime: Seconds after its last use when the box stops by itself (every call is
            a use; a call in progress or an open stream keeps it). Default: never.
        template: Start from this `Template`: its packages, its preloaded modules (built on
            first use, unless `build_template` did ahead); on a gateway given by URL, its
            kernelspec ``codebox-template-<id>``.
        snapshot: Start from this `Snapshot` (or its id) of a `LocalBox` of this machine
            (``settings.snapshot_dir``): its files, packages and variables are restored
            when the box first starts; the first run says on stderr what could not be.

    Raises:
        CodeBoxNotFoundError: There is no such snapshot.
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
        kernel_id: str | None = None,
        env: Mapping[str, str] | None = None,
        settings: CodeBoxSettings | None = None,
        sandbox: bool | Sandbox | None = None,
        lifetime: float | None = None,
        template: Template | None = None,
        snapshot: Snapshot | str | None = None,
    ) -> None:
        super().__init__(settings=settings)
        self._env = check_env(env)
        s = self.settings
        self._options: dict[str, Any] = {
            "kernel_name": kernel_name, "gateway_url": gateway_url,
            "gateway_token": gateway_token, "env": env, "settings": self.settings,
            "sandbox": sandbox, "lifetime": lifetime, "template": template}
        self._sandbox = resolve(sandbox, s.sandbox)
        self._gateway_url = (gateway_url or s.gateway_url or "").rstrip("/") or None
        self._template = None if template is None else TemplateChoice(
            template, s, gateway_url=self._gateway_url, sandboxed=self._sandbox is not None)
        self._gateway_token = gateway_token if gateway_token is not None else s.gateway_token
        wd = working_dir if working_dir is not None else s.working_dir
        self._working_dir = str(wd) if wd is not None else None
        self._kernel_name = kernel_name or s.kernel_name
        self._temp_dir: str | None = None
        self._holds_gateway = False
        self._gateway_lock = threading.Lock()
        self._side: httpx.Client | None = None
        self._state = KernelState()
        self._state.stopping = lambda: self._lease.stopping
        self._local_ops = _LocalOps(self)
        if kernel_id is not None:
            self._attach(kernel_id)
        self._snapshots = SnapshotDir(default_root(s))
        if snapshot is not None:
            snapshot_id = check_id(snapshot.id if isinstance(snapshot, Snapshot) else snapshot)
            self._snapshots.get(snapshot_id)  # (raises if there is none)
            self._state.after_setup = _snapshot_ops.restorer(self._snapshots, snapshot_id)
        self._session_id = uuid.uuid4().hex
        self._usage = Usage(self, lifetime)
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
    def session_id(self) -> str:
        """The box's id in this process (see `from_id`)."""
        return self._session_id

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

    @property
    def _ops(self) -> _LocalOps:
        return self._local_ops

    def _attach(self, kernel_id: str) -> None:
        if self._gateway_url is None:
            raise ValueError("kernel_id= needs gateway_url=: only a kernel on a gateway "
                             "given by URL outlives the box that started it")
        st = self._state
        st.address = GatewayAddress(self._gateway_url, self._gateway_token)
        # Set up again at first use (idempotent): the kernel says its root then.
        st.kernel_id, st.needs_setup, st.status = kernel_id, True, "running"

    # -- where: the gateway and the config ------------------------------------------------

    def _policy(self) -> dict[str, Any] | None:
        if self._sandbox is None:
            return None
        policy = self._sandbox.policy()
        if self._template is not None:
            policy["template"] = self._template.sandbox_field()
        if self._working_dir is not None and self._gateway_url is None:
            policy["work_dir"] = str(Path(self._working_dir).expanduser().resolve())
        return policy

    def _gateway_address(self, refused: GatewayAddress | None = None) -> GatewayAddress:
        if self._gateway_url is not None:
            return GatewayAddress(self._gateway_url, self._gateway_token)
        with self._gateway_lock:
            if self._holds_gateway:
                return shared_gateway.current(self.settings, self._policy(), refused=refused)
            # Whether bwrap works here is found out (once per process) while the gateway
            # starts.
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
        with self._gateway_lock:
            held, self._holds_gateway = self._holds_gateway, False
        if held:
            shared_gateway.release()

    def _config(self, *, own_root: bool = True) -> KernelConfig:
        """What the box asks of its kernel (under the lease). ``own_root``: make the box's
        temporary root now if it has none yet (not for a stop)."""
        root = self._working_dir
        if root is not None and self._gateway_url is None:
            root = str(Path(root).expanduser().resolve())
        elif root is None and self._gateway_url is None and self._sandbox is None:
            # A spawned gateway runs on this machine: the box owns a local temporary root.
            # (A sandboxed kernel has one of its own, made and removed with it.)
            if self._temp_dir is None and own_root:
                self._temp_dir = tempfile.mkdtemp(prefix="codebox-")
            root = self._temp_dir
        s = self.settings
        return KernelConfig(
            kernel_name=self._kernel_name if self._template is None
            else self._template.kernel_name(),
            root=root,
            timeout=s.timeout,
            start_timeout=s.start_timeout,
            interrupt_timeout=s.interrupt_timeout,
            output_limit=s.output_limit,
            chunk_size=s.chunk_size,
            env=self._env,
            gateway_env=self._gateway_env(),
            sandbox=self._policy(),
            # Only where the kernel made the root (a remote gateway; a sandbox's own
            # directory goes with its kernel).
            remove_root=(self._working_dir is None and self._gateway_url is not None
                         and self._sandbox is None),
            kept_root=self._kept_root(),
            check_after=s.kernel_check_after,
            dialect=dialect_for(self._kernel_name),
        )

    def _kept_root(self) -> str | None:
        """The directory of a sandboxed box's files, its kernel's own on this machine (see
        `KernelConfig.kept_root`)."""
        root = self._state.root
        if (self._sandbox is None or self._working_dir is not None or self._gateway_url
                or root is None or not os.path.isdir(root)):
            return None
        return root

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

    # -- transports and the side channel ------------------------------------------------

    def _new_transport(self) -> engine.Transport:
        return JupyterTransport(self._gateway_address, self._release_gateway)

    def _new_atransport(self) -> engine.AsyncTransport:
        return AsyncJupyterTransport(self._gateway_address, self._release_gateway)

    def _side_interrupt(self) -> None:
        """``POST /api/kernels/{id}/interrupt`` on a client of its own (no operation's):
        a kernel gone meanwhile has nothing to interrupt."""
        st = self._state
        address, kernel_id = st.address, st.kernel_id
        if address is None or kernel_id is None:
            return
        client = self._side
        if client is None or str(client.base_url).rstrip("/") != address.url:
            headers = {"Authorization": f"token {address.token}"} if address.token else {}
            client = self._side = httpx.Client(
                base_url=address.url, headers=headers, trust_env=False,
                verify=verify_for(address.url), timeout=self.settings.interrupt_timeout)
        try:
            response = client.post(f"/api/kernels/{kernel_id}/interrupt")
        except httpx.HTTPError as exc:
            raise CodeBoxConnectionError(f"interrupt: cannot reach the gateway: {exc}") from exc
        if response.status_code >= 300 and response.status_code != 404:
            raise CodeBoxError(f"interrupt: the gateway answered HTTP {response.status_code}",
                               http_status=response.status_code)

    def _stop_grace(self) -> float:
        if self._config(own_root=False).remove_root:
            return self.settings.interrupt_timeout  # the kernel must be idle to clean up
        return min(self.settings.interrupt_timeout, _STOP_GRACE)

    def _used(self) -> None:
        self._usage.touch()

    async def _aprepare(self) -> None:
        # A template is built on first use: never on the event loop.
        if self._template is not None and not self._gateway_url:
            await asyncio.to_thread(self._template.built)

    def _stopped(self) -> None:
        self._usage.stopped()
        if self._temp_dir is not None:
            with contextlib.suppress(OSError):  # (what a kernel of this machine left)
                os.remove(started_marker(self._temp_dir, tempfile.gettempdir()))
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        side, self._side = self._side, None
        if side is not None:
            side.close()

    # -- snapshots --------------------------------------------------------------------

    def _fork_box(self, snapshot: Snapshot) -> LocalBox:
        # The same options; its own directory (a fork must not share the files it copies).
        return LocalBox(**self._options, snapshot=snapshot)

    def _drop_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshots.delete(snapshot.id)

    async def _adrop_snapshot(self, snapshot: Snapshot) -> None:
        await asyncio.to_thread(self._snapshots.delete, snapshot.id)

    async def _asnapshot_within(self, limit: int | None) -> Snapshot:
        """`asnapshot` of at most ``limit`` bytes (`codebox serve`'s quota).

        Raises:
            SnapshotTooLarge: It would take more (nothing is kept).
        """
        return await self._acall(self._ops.snapshot(limit))

    @classmethod
    def delete_snapshot(cls, snapshot_id: str, *, settings: CodeBoxSettings | None = None
                        ) -> None:
        """Remove a snapshot of this machine (``settings.snapshot_dir``).

        Raises:
            CodeBoxNotFoundError: There is no such snapshot.
        """
        store = SnapshotDir(default_root(settings or CodeBoxSettings()))
        if not store.delete(check_id(snapshot_id)):
            raise CodeBoxNotFoundError(f"no snapshot {snapshot_id!r}")

    @classmethod
    async def adelete_snapshot(cls, snapshot_id: str, *,
                               settings: CodeBoxSettings | None = None) -> None:
        """Async version of `delete_snapshot`."""
        await asyncio.to_thread(cls.delete_snapshot, snapshot_id, settings=settings)

    # Last in the class: below ``list``, the name would shadow the builtin in annotations.
    @classmethod
    async def alist(cls) -> list[BoxInfo]:
        """Async version of `list`."""
        return cls.list()

    @classmethod
    def list(cls) -> list[BoxInfo]:
        """The boxes of this process that are not stopped, oldest first (no I/O)."""
        boxes = [box for box in list(cls._live.values()) if box.status() != "stopped"]
        infos = [box._usage.info(box, None if box._template is None
                                 else box._template.template.id) for box in boxes]
        return sorted(infos, key=lambda info: info.created)


class _LocalOps:
    """The operations of a `LocalBox`, bound to its state and config. The config is read
    when an operation begins (under the lease), not when it is made."""

    def __init__(self, box: LocalBox) -> None:
        self._box = box

    def _op(self, fn: Callable[..., Op[T]], *args: Any, own_root: bool = True) -> Op[T]:
        st = self._box._state
        cfg = self._box._config(own_root=own_root)
        try:
            return (yield from fn(st, cfg, *args))
        finally:
            st.last_used = now()

    def status(self) -> CodeBoxStatus:
        return CodeBoxStatus(status=self._box._state.status)

    def start(self) -> Op[CodeBoxStatus]:
        return self._op(_lifecycle.start)

    def stop(self) -> Op[CodeBoxStatus]:
        return self._op(_lifecycle.stop, own_root=False)

    def restart(self) -> Op[CodeBoxStatus]:
        return self._op(_lifecycle.restart)

    def run(self, code: str, timeout: float | None, streaming: bool) -> Op[CodeBoxOutput]:
        return self._op(_execution.execute, code, timeout)

    def shell(self, command: str | list[str], timeout: float | None, cwd: str | None,
              env: dict[str, str], streaming: bool) -> Op[CommandResult]:
        return self._op(_execution.shell, command, timeout, cwd, env)

    def install(self, names: tuple[str, ...], timeout: float) -> Op[CodeBoxStatus]:
        return self._op(_execution.install, names, timeout)

    def upload(self, name: str, data: bytes | memoryview, timeout: float,
               on_progress: OnProgress | None) -> Op[CodeBoxFile]:
        return self._op(_transfers.upload, name, data, timeout, on_progress)

    def download(self, name: str, timeout: float,
                 on_progress: OnProgress | None) -> Op[CodeBoxFile]:
        return self._op(_transfers.download, name, timeout, on_progress)

    def read(self, name: str, timeout: float) -> Op[None]:
        return self._op(_transfers.read, name, timeout)

    def list_files(self) -> Op[list[CodeBoxFile]]:
        return self._op(_fileops.list_files)

    def remove(self, path: str) -> Op[CodeBoxStatus]:
        return self._op(_fileops.remove, path)

    def rename(self, source: str, destination: str) -> Op[CodeBoxFile]:
        return self._op(_fileops.rename, source, destination)

    def make_dir(self, path: str) -> Op[CodeBoxFile]:
        return self._op(_fileops.make_dir, path)

    def exists(self, path: str) -> Op[bool]:
        return self._op(_fileops.exists, path)

    def file_info(self, path: str) -> Op[CodeBoxFile]:
        return self._op(_fileops.file_info, path)

    def set_lifetime(self, seconds: float | None) -> Op[datetime | None]:
        return engine.pure(lambda: self._box._usage.set_lifetime(seconds))

    def snapshot(self, limit: int | None = None) -> Op[Snapshot]:
        return self._op(_snapshot_ops.take, self._box._snapshots, limit)
