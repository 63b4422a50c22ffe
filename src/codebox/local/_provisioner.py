"""``codebox-sandbox``: a Jupyter kernel provisioner that starts each kernel in a sandbox.

Registered under the ``jupyter_client.kernel_provisioners`` entry point, so any Jupyter
server where codebox is installed (our spawned gateway, a Kernel Gateway, JupyterLab) can
use it: a kernelspec names it in ``metadata.kernel_provisioner``. The policy of a kernel is
the kernelspec's ``config.policy``, overridden field by field by the JSON in the
kernel-create request's env variable ``KERNEL_CODEBOX_SANDBOX`` (the gateways pass
``KERNEL_*`` variables on). Unless the kernelspec says ``"trusted": true`` (the gateway a
box spawns for itself), its policy is a ceiling: a request may tighten the limits but not
loosen them, nor ask for the network or for host paths (else a client could have ``/``
bound in).

Each kernel gets a directory of its own (``<runtime dir>/codebox-boxes/<kernel id>``, mode
0700): ``work`` (its working directory, unless the policy names one), ``home`` (``HOME``,
with ``site``, where `install` puts packages), ``ipc`` (where the kernel binds its ZMQ unix
sockets: the kernel and the gateway never talk over the host's network) and ``gw``,
which the box never sees: the gateway connects there, to hard links of the kernel's sockets
made once each is bound. The box can rename or replace anything in ``ipc``, so the gateway
never resolves a name there (a symlink planted in place of a socket would make it connect,
as the host's user, to any socket of the host). The connection
file is bound in read-only by itself; the rest of the gateway's runtime directory — other
kernels' connection files, the cookie secret — does not exist inside. A restart keeps the
directory; shutting the kernel down removes it, in the background (a box with many
files must not hold up the gateway).

As root, each kernel runs as a host user of its own (`_boxuser`), its working directory is a
filesystem of its own where codebox made that directory (`_boxdisk`), and its stdout and
stderr are a channel of its own (`_kernel_output`). A kernel that dies at launch (bwrap could
not run it) fails its start at once, with what it said, instead of leaving its box to wait.

The box's network is a loopback of its own. Where its policy lets anything through, the
provisioner owns the box's egress proxy (`_proxy`): it listens on a unix socket in ``net``
from the first launch on, lives through restarts and stops with the kernel. The provisioner
also runs the box's installs (`install`), each in an installer sandbox of its own
(`_installer`) hardened as the kernel is (its user, limits, seccomp filter, interpreter):
the box itself needs no network for them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Dict, Unicode

from . import _boxdisk, _boxnet, _boxuser, _egress, _head_start, _sandbox, _watchdog
from ._kernel_output import KernelOutput

NAME = _sandbox.KERNEL_NAME
LAUNCH_WAIT = 30.0
"""Most seconds a launch waits for the kernel to bind its sockets (or to die trying)."""
_REMOVING: set[Any] = set()  # background removals of boxes' directories


class SandboxProvisioner(LocalProvisioner):
    """Launches the kernelspec's command inside a bubblewrap sandbox (see `_sandbox`)."""

    trusted = Bool(False, config=True,
                   help="Take host paths (read_only_paths, work_dir) from the request too.")
    policy = Dict(config=True, help="The sandbox policy; the request may override fields.")
    base_dir = Unicode("", config=True, help="Where the kernels' own directories go.")

    _box_dir: Path | None = None
    _cgroups: _sandbox.Cgroups | None = None
    _head_start: Any = None  # the early process this launch adopts (see `_head_start`)
    _launches = 0
    _linker: asyncio.Future[None] | None = None
    _sockets: tuple[tuple[str, str], ...] = ()
    _egress: Any = None  # the box's `_proxy.EgressProxy`, across restarts
    # What its installs need: policy, dirs, python, and the directories private to the box
    _box: tuple[dict[str, Any], dict[str, str], str, tuple[str, ...]] | None = None
    _user: _boxuser.BoxUser | None = None
    _dirs: dict[str, str] | None = None
    _sandbox_policy: dict[str, Any] | None = None
    _work_owner: tuple[int, int] | None = None  # a caller's directory's, given back at the end
    _output: KernelOutput | None = None
    _watch: _watchdog.Watch | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._installs: set[asyncio.Task[tuple[int, str]]] = set()  # end with the kernel

    def _policy_from(self, env: dict[str, str]) -> dict[str, Any]:
        return _sandbox.requested_policy(self.policy, env.get(_sandbox.POLICY_ENV),
                                         trusted=self.trusted)

    def _make_dirs(self, policy: dict[str, Any]) -> dict[str, str]:
        if self._box_dir is None:
            self._box_dir = _sandbox.boxes_dir(self.base_dir) / str(self.kernel_id)
            self._box_dir.mkdir(mode=0o700, exist_ok=True)
        span = _boxuser.uid_range()
        if span is not None and self._user is None:
            self._user = _boxuser.allocate(span)
        dirs = _sandbox.box_dirs(self._box_dir, policy)
        if policy.get("work_dir") and not policy.get("own_work_dir") and (
                self._work_owner is None):
            st = os.stat(dirs["work"])
            self._work_owner = (st.st_uid, st.st_gid)
        return dirs

    @property
    def _owner(self) -> tuple[int, int] | None:
        return (self._user.uid, self._user.gid) if self._user is not None else None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        env = dict(kwargs.get("env") or os.environ)
        try:
            policy = self._policy_from(env)
        except (ValueError, TypeError, PermissionError) as exc:
            raise _refused(exc) from None
        # No probe run here (~0.1 s before the first kernel): a box checks bwrap before it
        # asks for a sandbox; elsewhere a bwrap that cannot run fails the kernel's start.
        bwrap = _sandbox.find_bwrap()
        km = self.parent
        assert km is not None  # a provisioner always belongs to a kernel manager
        head = _head_start.WAITING.pop(str(self.kernel_id), None)
        unfit = head and head.unfit(policy, _sandbox.boxes_dir(self.base_dir))
        if head is not None and unfit:
            head.give_up(unfit)
            head = None
        if head is not None:  # its directories, with the kernel's sockets, stay as they are
            self._box_dir, dirs, info, self._user = head.take()
            km.load_connection_info(info)  # so the connection file says the same
        else:
            dirs = self._make_dirs(policy)
        # ZMQ over unix sockets in the kernel's own directory: no shared network needed.
        km.transport = "ipc"
        km.ip = os.path.join(dirs["gw"], "k")
        km.cache_ports = False
        kwargs = await super().pre_launch(**kwargs)
        if head is not None:
            reason = head.mismatch(kwargs["cmd"], km.get_connection_info())
            if reason is None:
                self._head_start, launch = head, head.launch
            else:
                head.give_up(reason)
                dirs = self._make_dirs(policy)
        if self._head_start is None:
            # The kernel binds in ipc; the gateway (km.ip) connects in gw.
            assert self._box_dir is not None
            try:
                await asyncio.to_thread(_sandbox.settle_dirs, dirs, policy, self._owner)
            except OSError as exc:
                raise _refused(exc, 500) from None
            launch = _sandbox.prepare_launch(
                bwrap, policy, box_dir=self._box_dir, dirs=dirs, kernel_argv=kwargs["cmd"],
                info=km.get_connection_info(), connection_file=km.connection_file,
                cgroup_name=f"codebox-{self.kernel_id}-{self._launches + 1}",
                user=self._owner)
        self._launches += 1
        self._box = (policy, dict(dirs), kwargs["cmd"][0],
                     (os.path.dirname(km.connection_file), str(self._box_dir)))
        await self._start_egress(policy, dirs)
        self._dirs, self._sandbox_policy = dict(dirs), policy
        self._sockets, self._cgroups = launch.sockets, launch.cgroups
        # Its stdout and stderr: a pipe of its own, drained by `KernelOutput`.
        kwargs.update(cmd=launch.cmd, env=launch.env, cwd=launch.cwd, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT)
        self.log.debug("codebox sandbox for kernel %s: %s", self.kernel_id, kwargs["cmd"])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        head, self._head_start = self._head_start, None
        if head is not None and head.adopt_into(self, cmd):
            info = self.connection_info
        else:
            info = await super().launch_kernel(cmd, **kwargs)
        self._output = KernelOutput(self.process, str(self.kernel_id), self.log)
        self._linker = asyncio.ensure_future(self._link_sockets(list(self._sockets)))
        try:
            await self._launched()
        except BaseException:
            # No one cleans up a kernel that never started (the kernel manager drops it):
            # its filesystem, cgroups, proxy, user and directory are given back here.
            await self.cleanup(restart=False)
            raise
        policy = self._sandbox_policy or {}
        cgroups = self._cgroups
        if policy.get("memory_mb") and (cgroups is None or "memory" not in cgroups.held):
            assert self.process is not None
            self._watch = _watchdog.Watch(
                self.process.pid, policy["memory_mb"] * 1024 * 1024, str(self.kernel_id),
                self.log)
        return info

    async def _launched(self) -> None:
        """Wait until the kernel has bound its sockets; if it exits first, fail the start
        with what it said (bwrap's error, the launcher's, the interpreter's)."""
        end = time.monotonic() + LAUNCH_WAIT
        assert self._linker is not None
        while not self._linker.done() and time.monotonic() < end:
            if self.process is None or self.process.poll() is not None:
                break
            await asyncio.sleep(0.02)
        if self.process is not None and self.process.poll() is not None and (
                not self._linker.done()):
            assert self._output is not None
            await self._output.wait_closed(1.0)
            code = self.process.poll()
            said = self._output.said()
            self.log.error("codebox sandbox: kernel %s exited at launch (code %s): %s",
                           self.kernel_id, code, said)
            raise _refused(RuntimeError(
                f"the kernel exited at launch (code {code}): {said}"), 500)

    async def _link_sockets(self, pairs: list[tuple[str, str]], deadline: float = 120) -> None:
        """Hard-link each socket the kernel binds in ``ipc`` into ``gw`` (ZMQ retries
        its connects until they appear). Only a socket is linked, never what a symlink
        names: the link is checked where the box cannot change it."""
        end = time.monotonic() + deadline
        while pairs and time.monotonic() < end:
            for inside, outside in list(pairs):
                try:
                    if not stat.S_ISSOCK(os.lstat(inside).st_mode):
                        continue
                    os.link(inside, outside, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISSOCK(os.lstat(outside).st_mode):
                    pairs.remove((inside, outside))
                else:  # replaced between the check and the link
                    os.unlink(outside)
            if pairs:
                await asyncio.sleep(0.02)

    async def _start_egress(self, policy: dict[str, Any], dirs: dict[str, str]) -> None:
        """The box's egress proxy, started at its first launch (a kernel started ahead of
        it waits for it) and kept across restarts; none when nothing may get through."""
        from . import _proxy

        rules = _egress.Policy(policy["network"])
        if self._egress is not None:
            self._egress.policy = rules
        elif rules.enabled:
            self._egress = _proxy.EgressProxy(rules, _boxnet.socket_path(dirs["net"]),
                                              box_id=str(self.kernel_id), logger=self.log)
            await self._egress.start()

    async def install(self, packages: list[str], timeout: float) -> tuple[int, str]:
        """``pip install`` ``packages`` into the box's package directory, in an installer
        sandbox of its own (see `_installer`); pip's exit code and output."""
        from . import _installer

        if self._box is None:
            raise LookupError("the kernel was never launched")
        policy, dirs, python, private = self._box
        template = policy.get("template")  # its interpreter, as the kernel's
        task = asyncio.ensure_future(_installer.install_for_box(
            packages, python=template["python"] if template else python, dirs=dirs,
            policy=policy, timeout=timeout, python_dirs=template["paths"] if template else None,
            private=private, user=self._owner, name=f"installer of {self.kernel_id}"))
        self._installs.add(task)
        try:
            return await task
        finally:
            self._installs.discard(task)

    async def cleanup(self, restart: bool = False) -> None:
        if self._linker is not None:
            self._linker.cancel()
        if self._watch is not None:
            self._watch.stop()
        self._linker = self._watch = None
        if self._output is not None:
            self._output.close()
            self._output = None
        await super().cleanup(restart=restart)
        if self._cgroups is not None:
            self._cgroups.kill_all()
            await asyncio.to_thread(self._cgroups.remove, 2.0)
            self._cgroups = None
        if not restart:
            for install in self._installs:
                install.cancel()  # (its sandbox is killed: it would write into a removed box)
        if not restart and self._egress is not None:
            await self._egress.stop()
            self._egress = None
        if not restart and self._box_dir is not None:
            box_dir, dirs, self._box_dir = self._box_dir, self._dirs, None
            await asyncio.to_thread(self._give_back, dirs)
            if self._user is not None:
                self._user.release()
                self._user = None
            _remove_in_background(box_dir)

    def _give_back(self, dirs: dict[str, str] | None) -> None:
        """What the box held on the host, given back: its filesystem unmounted (its files
        stay in the image, in the directory), a caller's directory to its owner."""
        if dirs is None:
            return
        if _sandbox.sized_work_dir(self._sandbox_policy or {}):
            try:
                _boxdisk.detach(dirs["work"])
            except OSError as exc:
                self.log.warning("codebox sandbox: %s", exc)
        if self._work_owner is not None and self._user is not None:
            _boxuser.chown_tree(dirs["work"], *self._work_owner, only_from=self._user.uid)


def _remove_in_background(box_dir: Path) -> None:
    """Remove a box's directory without holding up the gateway: renamed out of the way
    at once, then removed by ``rm`` in a process of its own (no lock of ours, however
    many files it holds), which never crosses into another filesystem."""
    trash = box_dir.with_name(f".removing-{uuid.uuid4().hex}")
    try:
        box_dir.rename(trash)
    except OSError:
        return
    rm = shutil.which("rm")
    if rm is None:
        shutil.rmtree(trash, ignore_errors=True)
        return

    async def remove() -> None:
        proc = await asyncio.create_subprocess_exec(
            rm, "-rf", "--one-file-system", str(trash), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await proc.wait()

    task = asyncio.ensure_future(remove())
    _REMOVING.add(task)
    task.add_done_callback(_REMOVING.discard)


def _refused(exc: Exception, status: int | None = None) -> Exception:
    """A refused policy (or a failed launch) as the HTTP error a Jupyter server passes on to
    its client (403, 400 or ``status``, with the reason), instead of an anonymous 500."""
    try:
        from tornado.web import HTTPError
    except ImportError:
        return exc
    if status is None:
        status = 403 if isinstance(exc, PermissionError) else 400
    return HTTPError(status, f"codebox sandbox: {exc}".replace("%", "%%"))
