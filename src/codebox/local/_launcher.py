"""The first process of a sandbox's launch: puts itself where the sandbox must start, then
becomes ``bwrap``.

Run as a script by path (``python -I -S _launcher.py SPEC bwrap ...``): standard library
only, no site, nothing of codebox imported (it runs once per kernel start). ``SPEC`` is JSON:

- ``cgroups``: ``cgroup.procs`` files to move itself into (and so every process it starts);
- ``fds``: ``{fd: path}``, files to open at those descriptor numbers (the seccomp program,
  the file of bwrap's arguments);
- ``stage``: when the box runs as a user of its own (codebox runs as root), the host paths
  bound into the box are first bound, in a mount namespace of this launch only, under
  ``base`` (``[[source, name], ...]``): the box's user can then reach them even where their
  parents are closed to it (a 0700 runtime or data directory, a caller's directory inside
  its own temporary one). That namespace, and the binds, end with the sandbox;
- ``uid``/``gid``: the user to become before bwrap runs (None: stay who we are).

`command` is the host's side of it (imported by `_sandbox`): the SPEC of a sandbox's launch.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (annotations only: the script imports as little as it can)
    from collections.abc import Sequence
    from pathlib import Path

SECCOMP_FD = 3
"""The descriptor bwrap reads the seccomp program from."""
_ARGS_FD = 4  # the descriptor bwrap reads its options from
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"codebox launcher: {what}: {os.strerror(errno)}")


def _stage(base: str, binds: list[list[str]]) -> None:
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare the mount namespace")
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    _check(libc.mount(b"tmpfs", base.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                      b"mode=0711,size=1m,nr_inodes=4096"), f"mount a tmpfs on {base}")
    for source, name in binds:
        if not os.path.exists(source):
            continue  # bound with --ro-bind-try: bwrap skips it too
        target = os.path.join(base, name)
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        _check(libc.mount(source.encode(), target.encode(), None, _MS_BIND | _MS_REC, None),
               f"bind {source}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    for procs in spec.get("cgroups") or ():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    stage = spec.get("stage")
    if stage:
        _stage(stage["base"], stage["binds"])
    for fd, path in sorted((spec.get("fds") or {}).items(), key=lambda i: int(i[0])):
        opened = os.open(path, os.O_RDONLY)
        if opened != int(fd):
            os.dup2(opened, int(fd))
            os.close(opened)
        os.set_inheritable(int(fd), True)
    uid, gid = spec.get("uid"), spec.get("gid")
    if uid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    os.execv(argv[0], argv)


# -- the host's side ---------------------------------------------------------------------


def command(argv: list[str], *, state_dir: Path, seccomp: bytes | None, cgroups: list[str],
            user: tuple[int, int] | None, public: Sequence[str]) -> list[str]:
    """The command that runs bwrap's ``argv`` through this launcher: it joins ``cgroups``
    (their ``cgroup.procs``), opens the seccomp program and bwrap's options (both written in
    ``state_dir``), stages the binds of host paths outside ``public`` and drops to ``user``,
    then runs ``bwrap --args``. bwrap's options come from a file, so that the sandbox's
    pid 1 (bwrap) shows none of the host's paths in its command line."""
    split = argv.index("--")
    options, program = argv[1:split], argv[split + 1:]
    args_file = state_dir / "bwrap.args"
    spec: dict[str, Any] = {"fds": {str(_ARGS_FD): str(args_file)}, "cgroups": cgroups}
    if seccomp is not None:
        (state_dir / "seccomp.bpf").write_bytes(seccomp)
        spec["fds"][str(SECCOMP_FD)] = str(state_dir / "seccomp.bpf")
    if user is not None:
        base = stage_base()
        options, binds = _staged(options, base, public)
        spec.update(stage={"base": base, "binds": binds}, uid=user[0], gid=user[1])
    args_file.write_bytes(b"".join(o.encode() + b"\0" for o in options))
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(spec), argv[0],
            "--args", str(_ARGS_FD), "--", *program]


def stage_base() -> str:
    """Where a launch stages a box's binds (in a mount namespace of its own): an empty
    directory of root's, reachable by every user, made once."""
    import tempfile

    base = os.path.join(tempfile.gettempdir(), "codebox-stage-0")
    try:
        os.mkdir(base, 0o755)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if st.st_uid != 0 or not os.path.isdir(base) or os.path.islink(base):
        raise PermissionError(f"{base} is not root's own directory")
    return base


def _staged(options: list[str], base: str,
            public: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """bwrap's options with the source of every bind of a host path outside ``public`` (the
    Python installation, the box's directories, granted paths) replaced by its place under
    ``base``; and those binds, for `_stage`."""
    out, binds = list(options), list[list[str]]()
    public = [os.path.realpath(p).rstrip("/") for p in public]
    i = 0
    while i < len(options):
        option = options[i]
        if option in _BIND_FLAGS and i + 1 < len(options):
            source = os.path.realpath(options[i + 1])
            if not any(source == p or source.startswith(p + "/") for p in public):
                binds.append([options[i + 1], str(len(binds))])
                out[i + 1] = os.path.join(base, binds[-1][1])
        i += 1 + _ARITY.get(option, 0)
    return out, binds


_BIND_FLAGS = ("--bind", "--bind-try", "--ro-bind", "--ro-bind-try")
# How many arguments each bwrap option takes (those not named: none).
_ARITY = {
    **dict.fromkeys(("--args", "--argv0", "--userns", "--userns2", "--pidns", "--uid", "--gid",
                     "--hostname", "--chdir", "--unsetenv", "--lock-file", "--sync-fd",
                     "--remount-ro", "--overlay-src", "--tmp-overlay", "--ro-overlay",
                     "--exec-label", "--file-label", "--proc", "--dev", "--tmpfs", "--mqueue",
                     "--dir", "--seccomp", "--add-seccomp-fd", "--block-fd",
                     "--userns-block-fd", "--info-fd", "--json-status-fd", "--cap-add",
                     "--cap-drop", "--perms", "--size"), 1),
    **dict.fromkeys(("--setenv", "--bind", "--bind-try", "--dev-bind", "--dev-bind-try",
                     "--ro-bind", "--ro-bind-try", "--bind-fd", "--ro-bind-fd", "--file",
                     "--bind-data", "--ro-bind-data", "--symlink", "--chmod"), 2),
    "--overlay": 3,
}


if __name__ == "__main__":
    try:
        main()
    except OSError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(125)
