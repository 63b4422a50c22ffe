"""The first kernel of a spawned gateway, launched before the gateway has imported its server.

A gateway spends ~0.45 s importing jupyter_server and kernel_gateway before its kernel
manager can launch anything, and a kernel then takes ~0.5 s to boot: one after the other,
they were most of the wait for a process's first box. So the gateway launches its first pool
kernel at once, with the standard library and ``jupyter_core.paths`` only, the way its
kernel manager would (same command, environment, working directory, process session), and
the kernel manager adopts that process when the pool asks for its first kernel. A plain
kernel is adopted by hooking its kernel manager's launch once (`HeadStart.arm`); a
sandboxed one by our own provisioner, which finds it in `WAITING`.

Adoption is checked: if what the kernel manager is about to launch differs (the command,
the environment, the launch arguments, the connection, the provisioner; for a sandbox the
policy, the kernel's command and its directory), the early process is killed and the kernel
launched the usual way. What both build with the same code (a sandbox's bwrap command line
from its policy) is not compared again. It does not outlive the gateway either: a plain
kernel watches ``JPY_PARENT_PID``, a sandboxed one runs under bwrap's ``--die-with-parent``,
as any kernel the gateway launches does.

Standard library only at import: it runs before the gateway's own imports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from string import Template
from typing import Any

# Arguments the gateway adds to an IPython kernel's command (see `_gateway_app`): no shared
# history file, and the bounds on a run's output applied in the kernel (`_kernel_limits`).
IPYKERNEL_ARGUMENTS = ["--HistoryManager.hist_file=:memory:",
                       "--IPKernelApp.exec_files="
                       + os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "_kernel_limits.py")]
_NATIVE_ARGV = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# Sandboxed head starts by kernel id, for the sandbox provisioner of that id to adopt.
WAITING: dict[str, SandboxHeadStart] = {}


def kernel_dirs() -> list[str]:
    """Where jupyter_client looks for kernelspecs: its default, except that IPython's own
    directory is found without importing IPython (~50 ms of the gateway's start); IPython's
    fallbacks for an unusable home are not followed (no kernelspecs live there)."""
    from jupyter_core.paths import jupyter_path

    ipython_dir = os.path.expanduser(os.environ.get("IPYTHONDIR") or "~/.ipython")
    return [*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")]


def _kernelspec(name: str) -> dict[str, Any] | None:
    """The kernelspec's ``kernel.json`` as jupyter_client finds it (the first kernel dir
    that has it; IPython's own for ``python3`` otherwise), with its directory."""
    for kernels in kernel_dirs():
        path = os.path.join(kernels, name, "kernel.json")
        if os.path.isfile(path):
            with open(path) as f:
                spec: dict[str, Any] = json.load(f)
            return {**spec, "resource_dir": os.path.dirname(path)}
    if name == "python3":
        return {"argv": _NATIVE_ARGV, "language": "python", "resource_dir": ""}
    return None


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Early:
    """A kernel process started early; ``outcome`` says what became of it."""

    kernel_id: str
    process: subprocess.Popen[bytes] | None = None
    cwd = ""  # where the process runs, as the provisioner records it
    outcome = "launched"  # then "adopted", or why it was not

    def _popen(self, cmd: list[str], env: dict[str, str], cwd: str | None,
               output: int | None = None) -> None:
        # As jupyter_client's launcher: its own session, JPY_PARENT_PID, and a stdin pipe
        # closed at once (code that reads stdin gets end-of-file, not a wait forever).
        self.process = subprocess.Popen(
            [os.path.expanduser(part) for part in cmd], stdin=subprocess.PIPE,
            env={**env, "JPY_PARENT_PID": str(os.getpid())}, cwd=cwd, start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT if output is not None else None)
        assert self.process.stdin is not None
        self.process.stdin.close()

    def _hand_over(self, provisioner: Any) -> bool:
        """Give the process to ``provisioner`` as if it had launched it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            self.outcome = "the early kernel had exited"
            return False
        provisioner.process, provisioner.pid = process, process.pid
        provisioner.pgid = os.getpgid(process.pid)
        provisioner.cwd = self.cwd
        self.outcome = "adopted"
        return True

    def give_up(self, reason: str) -> None:
        self.outcome = reason
        self.discard()

    def settle(self) -> None:
        """The pool's first kernel has started: an early process not adopted by now will
        never be."""
        if self.outcome == "launched":
            self.give_up("the kernel manager never asked for it")

    def discard(self) -> None:
        """Kill the process unless it was adopted (and what it leaves). Idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.wait()


class HeadStart(_Early):
    """A plain kernel (local provisioner), adopted by hooking its kernel manager's launch."""

    def __init__(self, kernel_name: str, runtime_dir: str) -> None:
        spec = _kernelspec(kernel_name)
        # (A kernel manager set to encrypt would add curve keys: see `mismatch`.)
        if spec is None or (spec.get("metadata") or {}).get("kernel_provisioner"):
            raise LookupError(f"no plain local kernelspec {kernel_name!r}")
        self.kernel_id = str(uuid.uuid4())
        # Its own file: the kernel manager writes kernel-<id>.json itself, and must not
        # rewrite a file this kernel may be reading.
        self.connection_file = os.path.join(runtime_dir, f"codebox-head-{self.kernel_id}.json")
        # What the kernel manager's get_connection_info() gives, the key as text.
        self.info: dict[str, Any] = {
            **dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True)),
            "ip": "127.0.0.1", "transport": "tcp", "signature_scheme": "hmac-sha256",
            "key": str(uuid.uuid4()),
        }
        fd = os.open(self.connection_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({**self.info, "kernel_name": kernel_name}, f)
            self._start(spec)
        except BaseException:
            self.discard()
            raise

    def _start(self, spec: dict[str, Any]) -> None:
        self.argv = _command(spec, os.path.realpath(self.connection_file))
        env = dict(os.environ)
        env.update({k: Template(v).safe_substitute(env)
                    for k, v in (spec.get("env") or {}).items()})
        if str(spec.get("language", "")).lower().startswith("python"):
            env.pop("PYTHONEXECUTABLE", None)
        # As the gateway's kernel manager (KernelGatewayIOLoopKernelManager) does.
        env["KERNEL_GATEWAY"] = "1"
        env.pop("KG_AUTH_TOKEN", None)
        self.env = env
        self.cwd = os.getcwd()
        self._popen(self.argv, env, None)

    def mismatch(self, km: Any, cmd: list[str], kwargs: dict[str, Any]) -> str | None:
        """Why the provisioner of the kernel manager ``km``, about to launch ``cmd`` with
        ``kwargs``, cannot take this process instead (None: it can)."""
        from jupyter_client.provisioning import LocalProvisioner

        provisioner = km.provisioner
        if type(provisioner) is not LocalProvisioner:
            return f"the kernel uses the provisioner {type(provisioner).__name__}"
        theirs = os.path.realpath(km.connection_file)
        ours = [part.replace(os.path.realpath(self.connection_file), theirs)
                for part in self.argv]
        if cmd != ours:
            return f"the command differs: {cmd} != {ours}"
        others = sorted(set(kwargs) - {"env", "kernel_id", "extra_arguments"})
        if others:
            return f"launch arguments differ: {others}"
        env = kwargs.get("env") or {}
        if env != self.env:
            changed = {k for k in {*env, *self.env} if env.get(k) != self.env.get(k)}
            return f"the environment differs in {sorted(changed)}"
        # Their ports and key are their own (we bring ours), the rest must be the same.
        info = dict(provisioner.connection_info)
        if set(info) != set(self.info) or any(
                info[k] != self.info[k] for k in ("ip", "transport", "signature_scheme")):
            return "the connection differs"
        return None

    def arm(self, km: Any) -> None:
        """Make ``km``, the new kernel manager of our kernel id, adopt the process.

        Its provisioner exists only once the launch begins, so the hook goes in two steps,
        each for one go (a restart launches the usual way): ``km``'s launch puts it on the
        provisioner, whose ``launch_kernel`` is the plain start of a process (the kernel
        manager's own launch adds to the environment first, and reads the connection
        from what the provisioner returns).
        """
        async def launch(cmd: list[str], **kwargs: Any) -> None:
            del km._async_launch_kernel
            km.provisioner.launch_kernel = adopt
            await km._async_launch_kernel(cmd, **kwargs)

        async def adopt(cmd: list[str], **kwargs: Any) -> dict[str, Any]:
            provisioner = km.provisioner
            del provisioner.launch_kernel
            reason = self.mismatch(km, cmd, kwargs)
            if reason is None and self._hand_over(provisioner):
                provisioner.connection_info = {**self.info, "key": self.info["key"].encode()}
                return dict(provisioner.connection_info)
            km.log.warning("codebox: not adopting the early kernel: %s",
                           reason or self.outcome)
            self.give_up(reason or self.outcome)
            info: dict[str, Any] = await provisioner.launch_kernel(cmd, **kwargs)
            return info

        km._async_launch_kernel = launch

    def discard(self) -> None:
        super().discard()
        try:  # the kernel has read it long ago, or is dead
            os.unlink(self.connection_file)
        except OSError:
            pass


class SandboxHeadStart(_Early):
    """A sandboxed kernel, prepared as `_provisioner.SandboxProvisioner` would, which
    adopts it: the same policy, directories, connection and bwrap command."""

    taken = False  # its directories belong to a provisioner now
    user: Any = None  # its `_boxuser.BoxUser`, if it runs as a user of its own

    def __init__(self, sandbox: dict[str, Any], runtime_dir: str) -> None:
        from . import _boxuser, _sandbox

        spec = _kernelspec(_sandbox.KERNEL_NAME)
        provisioner = ((spec or {}).get("metadata") or {}).get("kernel_provisioner") or {}
        if provisioner.get("provisioner_name") != _sandbox.KERNEL_NAME:
            raise LookupError("no codebox-sandbox kernelspec")
        assert spec is not None
        config = provisioner.get("config") or {}
        self.policy = _sandbox.requested_policy(
            config.get("policy"), json.dumps(sandbox, sort_keys=True),
            trusted=bool(config.get("trusted")))
        bwrap = _sandbox.find_bwrap()
        self.kernel_id = str(uuid.uuid4())
        self.box_dir = _sandbox.boxes_dir(config.get("base_dir", "")) / self.kernel_id
        self.box_dir.mkdir(mode=0o700)
        try:
            span = _boxuser.uid_range()
            if span is not None:
                self.user = _boxuser.allocate(span)
            self._start(spec, bwrap, runtime_dir)
        except BaseException:
            self.discard()
            raise

    def _start(self, spec: dict[str, Any], bwrap: str, runtime_dir: str) -> None:
        from . import _sandbox

        self.dirs = _sandbox.box_dirs(self.box_dir, self.policy)
        owner = (self.user.uid, self.user.gid) if self.user is not None else None
        _sandbox.settle_dirs(self.dirs, self.policy, owner)
        gateway_side = os.path.join(self.dirs["gw"], "k")
        self.info: dict[str, Any] = {
            **dict(zip(_PORTS, range(1, len(_PORTS) + 1), strict=True)),
            "ip": gateway_side, "transport": "ipc", "signature_scheme": "hmac-sha256",
            "key": str(uuid.uuid4()),
        }
        # The path the kernel manager gives its connection file, bound in at that path.
        connection_file = os.path.join(runtime_dir, f"kernel-{self.kernel_id}.json")
        self.kernel_argv = _command(spec, os.path.realpath(connection_file))
        self.launch = _sandbox.prepare_launch(
            bwrap, self.policy, box_dir=self.box_dir, dirs=self.dirs,
            kernel_argv=self.kernel_argv, info=self.info, connection_file=connection_file,
            cgroup_name=f"codebox-{self.kernel_id}-1", user=owner)
        self.cwd = self.launch.cwd
        # Its stdout and stderr: a pipe the provisioner drains once it adopts the process.
        self._popen(self.launch.cmd, {**self.launch.env, "KERNEL_GATEWAY": "1"},
                    self.launch.cwd, output=subprocess.PIPE)

    def arm(self, km: Any) -> None:
        WAITING[self.kernel_id] = self

    def unfit(self, policy: dict[str, Any], boxes_dir: Path) -> str | None:
        """Why a provisioner of ``policy`` keeping its kernels in ``boxes_dir`` cannot take
        this kernel, before it prepares anything (None: it may)."""
        if policy != self.policy:
            return "the policy differs"
        if self.box_dir.parent != boxes_dir:
            return "the kernels' directory differs"
        return None

    def mismatch(self, kernel_argv: list[str], info: dict[str, Any]) -> str | None:
        """Why a provisioner that would launch ``kernel_argv`` sandboxed, connected by
        ``info``, cannot take this process instead (None: it can)."""
        if kernel_argv != self.kernel_argv:
            return f"the command differs: {kernel_argv} != {self.kernel_argv}"
        if {**info, "key": info.get("key")} != {**self.info, "key": self.info["key"].encode()}:
            return "the connection differs"
        return None

    def take(self) -> tuple[Path, dict[str, str], dict[str, Any], Any]:
        """For the provisioner: the kernel's directory, its dirs, its connection and its
        user, which are the provisioner's from now on, whether it adopts the process or
        not."""
        self.taken = True
        return self.box_dir, self.dirs, self.info, self.user

    def adopt_into(self, provisioner: Any, cmd: list[str]) -> bool:
        """Give the process to ``provisioner``, about to launch ``cmd``; False if it
        cannot take it (the provisioner launches ``cmd`` itself then)."""
        if cmd != self.launch.cmd:  # a guard: the provisioner launches our command
            self.give_up("the sandbox command differs")
        elif not self._hand_over(provisioner):
            self.give_up(self.outcome)
        else:
            return True
        # The provisioner launches in these directories now: the dead kernel's sockets
        # must not be linked for the gateway in place of the new one's.
        from . import _sandbox

        _sandbox.settle_dirs(_sandbox.box_dirs(self.box_dir, self.policy), self.policy,
                             (self.user.uid, self.user.gid) if self.user is not None else None)
        return False

    def discard(self) -> None:
        WAITING.pop(self.kernel_id, None)
        adopted = self.outcome == "adopted"
        super().discard()
        if adopted:
            return
        launch = getattr(self, "launch", None)  # None: its start failed half-way
        if launch is not None:
            launch.cgroups.kill_all()
        if not self.taken:  # else the provisioner launches in them
            if launch is not None:
                launch.cgroups.remove(2.0)
            from . import _boxdisk

            try:
                _boxdisk.detach(os.path.join(self.box_dir, "work"))
            except OSError:
                pass
            shutil.rmtree(self.box_dir, ignore_errors=True)
            if self.user is not None:
                self.user.release()


def _command(spec: dict[str, Any], connection_file: str) -> list[str]:
    """The kernel's command, as the kernel manager's ``format_kernel_cmd`` makes it, with
    the arguments the gateway adds to an IPython kernel's."""
    argv = list(spec["argv"])
    if argv and argv[0] in {"python", f"python{sys.version_info[0]}",
                            "python{}.{}".format(*sys.version_info[:2])}:
        argv[0] = sys.executable
    if any("ipykernel" in part for part in argv):
        argv += IPYKERNEL_ARGUMENTS
    ns = {"connection_file": connection_file, "prefix": sys.prefix,
          "resource_dir": spec["resource_dir"]}
    # Known names only, others left as they are.
    return [re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: ns.get(m.group(1), m.group()), part)
            for part in argv]


def launch(settings: dict[str, Any]) -> HeadStart | SandboxHeadStart | None:
    """A head start for the gateway's first pool kernel, if it pools one."""
    if not settings.get("pool_size", 1):
        return None
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime_dir = jupyter_runtime_dir()
        if settings.get("sandbox") is not None:
            return SandboxHeadStart(settings["sandbox"], runtime_dir)
        return HeadStart(settings.get("kernel_name", "python3"), runtime_dir)
    except Exception:  # noqa: BLE001 - no head start: the kernel starts the usual way
        return None
