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
directory; shutting the kernel down removes it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Dict, Unicode

from . import _head_start, _sandbox

NAME = _sandbox.KERNEL_NAME


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

    def _policy_from(self, env: dict[str, str]) -> dict[str, Any]:
        return _sandbox.requested_policy(self.policy, env.get(_sandbox.POLICY_ENV),
                                         trusted=self.trusted)

    def _make_dirs(self, policy: dict[str, Any]) -> dict[str, str]:
        if self._box_dir is None:
            self._box_dir = _sandbox.boxes_dir(self.base_dir) / str(self.kernel_id)
            self._box_dir.mkdir(mode=0o700, exist_ok=True)
        return _sandbox.box_dirs(self._box_dir, policy)

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
            self._box_dir, dirs, info = head.take()
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
            launch = _sandbox.prepare_launch(
                bwrap, policy, box_dir=self._box_dir, dirs=dirs, kernel_argv=kwargs["cmd"],
                info=km.get_connection_info(), connection_file=km.connection_file,
                cgroup_name=f"codebox-{self.kernel_id}-{self._launches + 1}")
        self._launches += 1
        self._sockets, self._cgroups = launch.sockets, launch.cgroups
        kwargs.update(cmd=launch.cmd, env=launch.env, cwd=launch.cwd)
        self.log.debug("codebox sandbox for kernel %s: %s", self.kernel_id, kwargs["cmd"])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        head, self._head_start = self._head_start, None
        if head is not None and head.adopt_into(self, cmd):
            info = self.connection_info
        else:
            info = await super().launch_kernel(cmd, **kwargs)
        self._linker = asyncio.ensure_future(self._link_sockets(list(self._sockets)))
        return info

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
            await asyncio.sleep(0.02)

    async def cleanup(self, restart: bool = False) -> None:
        if self._linker is not None:
            self._linker.cancel()
            self._linker = None
        await super().cleanup(restart=restart)
        if self._cgroups is not None:
            self._cgroups.kill_all()
            self._cgroups.remove()
            self._cgroups = None
        if not restart and self._box_dir is not None:
            shutil.rmtree(self._box_dir, ignore_errors=True)
            self._box_dir = None


def _refused(exc: Exception) -> Exception:
    """A refused policy as the HTTP error a Jupyter server passes on to its client (403 or
    400 with the reason), instead of an anonymous 500."""
    try:
        from tornado.web import HTTPError
    except ImportError:
        return exc
    status = 403 if isinstance(exc, PermissionError) else 400
    return HTTPError(status, f"codebox sandbox: {exc}".replace("%", "%%"))
