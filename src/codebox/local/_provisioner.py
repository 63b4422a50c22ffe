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
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Bool, Dict, Unicode

from . import _sandbox

NAME = _sandbox.KERNEL_NAME


class SandboxProvisioner(LocalProvisioner):
    """Launches the kernelspec's command inside a bubblewrap sandbox (see `_sandbox`)."""

    trusted = Bool(False, config=True,
                   help="Take host paths (read_only_paths, work_dir) from the request too.")
    policy = Dict(config=True, help="The sandbox policy; the request may override fields.")
    base_dir = Unicode("", config=True, help="Where the kernels' own directories go.")

    _box_dir: Path | None = None
    _cgroups: _sandbox.Cgroups | None = None
    _launches = 0
    _linker: asyncio.Future[None] | None = None
    _sockets: tuple[tuple[str, str], ...] = ()

    def _policy_from(self, env: dict[str, str]) -> dict[str, Any]:
        base = _sandbox.normalize(self.policy)
        raw = env.get(_sandbox.POLICY_ENV)
        if not raw:
            return base
        requested = json.loads(raw)
        if not isinstance(requested, dict):
            raise ValueError(f"{_sandbox.POLICY_ENV} must be a JSON object")
        policy = _sandbox.normalize({**base, **requested})
        if not self.trusted:
            # The kernelspec's policy is the ceiling: a request may only tighten it.
            for key in _sandbox.PATH_FIELDS:
                if requested.get(key):
                    raise PermissionError(
                        f"the {NAME} kernelspec does not take {key} from a request")
            if policy["network"] and not base["network"]:
                raise PermissionError(f"the {NAME} kernelspec gives no network")
            for key in ("memory_mb", "max_processes", "disk_mb"):
                if base[key] is not None and (policy[key] is None or policy[key] > base[key]):
                    raise PermissionError(
                        f"the {NAME} kernelspec allows {key} up to {base[key]}")
        return policy

    def _make_dirs(self, policy: dict[str, Any]) -> dict[str, str]:
        if self._box_dir is None:
            from jupyter_core.paths import jupyter_runtime_dir

            base = Path(self.base_dir or os.path.join(jupyter_runtime_dir(), "codebox-boxes"))
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._box_dir = base / str(self.kernel_id)
            self._box_dir.mkdir(mode=0o700, exist_ok=True)
        dirs = {name: str(self._box_dir / name) for name in ("work", "home", "ipc", "gw")}
        if policy.get("work_dir"):
            dirs["work"] = os.path.realpath(policy["work_dir"])
        dirs["site"] = os.path.join(dirs["home"], "site")
        # Afresh at each launch (the previous sandbox is dead by now): nothing the box left
        # in its ipc dir survives into the next kernel's.
        for name in ("ipc", "gw"):
            shutil.rmtree(dirs[name], ignore_errors=True)
        for path in dirs.values():
            os.makedirs(path, mode=0o700, exist_ok=True)
        return dirs

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        env = dict(kwargs.get("env") or os.environ)
        try:
            policy = self._policy_from(env)
        except (ValueError, TypeError, PermissionError) as exc:
            raise _refused(exc) from None
        # No probe run here (~0.1 s before the first kernel): a box checks bwrap before it
        # asks for a sandbox; elsewhere a bwrap that cannot run fails the kernel's start.
        bwrap = _sandbox.find_bwrap()
        dirs = self._make_dirs(policy)
        km = self.parent
        assert km is not None  # a provisioner always belongs to a kernel manager
        # ZMQ over unix sockets in the kernel's own directory: no shared network needed.
        km.transport = "ipc"
        km.ip = os.path.join(dirs["gw"], "k")
        km.cache_ports = False
        kwargs = await super().pre_launch(**kwargs)
        # The kernel binds in ipc; the gateway (km.ip) connects in gw. The kernel's
        # connection file is a copy saying so, bound in where the gateway's is.
        bound = os.path.join(dirs["ipc"], "k")
        info = json.loads(Path(km.connection_file).read_text())
        assert self._box_dir is not None
        kernel_file = self._box_dir / "connection.json"
        kernel_file.write_text(json.dumps({**info, "ip": bound}, indent=1))
        self._sockets = tuple((f"{bound}-{port}", f"{km.ip}-{port}") for port in (
            km.shell_port, km.iopub_port, km.stdin_port, km.hb_port, km.control_port))
        inside = _sandbox.kernel_env(policy, home=dirs["home"], site=dirs["site"], extra={
            "CODEBOX_WORK_DIR": dirs["work"]}, python_bin=os.path.dirname(kwargs["cmd"][0]))
        seccomp = _sandbox.seccomp_filter()
        argv = _sandbox.bwrap_argv(
            bwrap, policy, kernel_argv=kwargs["cmd"], work_dir=dirs["work"],
            home=dirs["home"], ipc_dir=dirs["ipc"], connection_file=km.connection_file,
            connection_source=str(kernel_file), env=inside,
            seccomp_fd=3 if seccomp is not None else None)
        self._launches += 1
        self._cgroups = _sandbox.Cgroups(f"codebox-{self.kernel_id}-{self._launches}", policy)
        kwargs["cmd"] = self._cgroups.wrap(argv)
        if seccomp is not None:  # bwrap reads the filter from fd 3, opened by a shell
            filter_file = self._box_dir / "seccomp.bpf"
            filter_file.write_bytes(seccomp)
            kwargs["cmd"] = ["/bin/sh", "-c", 'exec "$@" 3<"$0"', str(filter_file),
                             *kwargs["cmd"]]
        # Not even bwrap gets the gateway's environment: its first child is the sandbox's
        # pid 1, whose /proc/1/environ the kernel can read.
        kwargs["env"] = {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": "C.UTF-8"}
        kwargs["cwd"] = str(self._box_dir)
        self.log.debug("codebox sandbox for kernel %s: %s", self.kernel_id, kwargs["cmd"])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
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
