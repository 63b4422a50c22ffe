"""What a box does inside its kernel — set-up, files, commands, installs, warming a pooled
kernel — behind one interface, `KernelDialect`, so that another kernel language is one more
implementation of it; `IPythonDialect` is the first.

A dialect answers with ``codebox_data`` messages on IOPub (JSON content; file bytes as raw
binary buffers), and takes upload bytes as buffers of the execute request.

For IPython each operation is a snippet: self-contained (it survives kernel restarts), run
as a *silent* execution (no execution count, no history, no echo), leaving no names behind
in the user's namespace. Parameters are embedded as Python literals; every path is resolved
under the box's root.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Protocol

from ._snapshot_code import BODIES as _SNAPSHOT_BODIES
from ._snapshot_code import HEAD_FORMAT

DATA_MSG_TYPE = "codebox_data"
PARTIAL_PREFIX = "\x7fcodebox-part-"
"""How the names of partial uploads begin: with DEL, which no file name a user may give
holds, so a partial file can neither hide nor overwrite a user's file, and its name has
the same length whatever the final name's (a digest of it)."""


def partial_name(leaf: str) -> str:
    """The name of the partial upload of the file named ``leaf``, in the same directory."""
    return PARTIAL_PREFIX + hashlib.sha256(leaf.encode("utf-8")).hexdigest()[:32]

# The common head of every snippet: `_send` answers on IOPub under the current request;
# `_dir` opens the directory of a checked relative name under the box's root, one
# component at a time and following no symbolic link, so that a link the user's code made
# (`lnk -> /etc`) can never lead a file operation out of the root; `_refuse_link` does the
# same for the last component.
_PRELUDE = """\
def __codebox_op(args):
    import os, stat
    def MARKER(root):
        # Where the last user run's id is kept: a sandbox's home, else the temp dir (both
        # outlive a kernel's restart), named after the box's root.
        import hashlib, tempfile
        base = os.environ.get("HOME") if os.environ.get("CODEBOX_WORK_DIR") else None
        digest = hashlib.sha256(root.encode()).hexdigest()[:16]
        return os.path.join(base or tempfile.gettempdir(), ".codebox-started-" + digest)
    _k = get_ipython().kernel
    _parent = _k.get_parent()
    def _send(content, buffers=None):
        _k.session.send(_k.iopub_socket, MSG_TYPE, content, parent=_parent,
                        ident=b"codebox", buffers=buffers)
    def _refuse_link(name, part, fd):
        try:
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise PermissionError(name + ": " + repr(part) + " is a symbolic link; file "
                                  "operations do not follow symbolic links")
        return st
    def _path(name):
        # For path-based operations: no existing parent may be a link (missing ones are
        # made as real directories); the last component is handled without following.
        path = args["root"]
        for part in name.split("/")[:-1]:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(st.st_mode):
                raise PermissionError(name + ": " + repr(part) + " is a symbolic link; file "
                                      "operations do not follow symbolic links")
        return os.path.join(args["root"], *name.split("/"))
    def _dir(name, create=False):
        fd = os.open(args["root"], os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in name.split("/")[:-1]:
                if _refuse_link(name, part, fd) is None and create:
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:
                        pass
                sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd
"""

_EPILOGUE = """
try:
    __codebox_op(ARGS)
finally:
    del __codebox_op
"""

_BODIES = {
    "setup": """\
    os.environ.update(args.get("env") or {})
    # The box's root; else the one this kernel was set up with already (a box attached to a
    # running kernel); else a sandbox's own directory; else a new temporary one.
    root = (args["root"] or getattr(_k, "_codebox_root", None)
            or os.environ.get("CODEBOX_WORK_DIR"))
    if root is None:
        import tempfile
        root = tempfile.mkdtemp(prefix="codebox-")
    os.makedirs(root, exist_ok=True)
    os.chdir(root)
    _k._codebox_root = os.path.abspath(root)
    # Which run began last, kept where a restarted kernel of this box finds it (`MARKER`):
    # a run whose kernel died can then say whether it had started. Written as each user
    # run begins (silent snippets do not count).
    marker = MARKER(_k._codebox_root)
    try:
        with open(marker) as f:
            started = f.read()
        os.remove(marker)
    except OSError:
        started = None
    if not getattr(_k, "_codebox_marks", False):
        def _mark(info, _k=_k, _marker=marker):
            try:
                with open(_marker, "w") as f:
                    f.write(_k.get_parent()["header"]["msg_id"])
            except (OSError, KeyError, TypeError):
                pass
        get_ipython().events.register("pre_run_cell", _mark)
        _k._codebox_marks = True
    _send({"root": _k._codebox_root, "started": started})
""",
    "cleanup": """\
    import shutil
    root = args["root"] or getattr(_k, "_codebox_root", None)
    if root is not None:
        try:
            os.remove(MARKER(root))
        except OSError:
            pass
        os.chdir(os.path.dirname(root))
        shutil.rmtree(root, ignore_errors=True)
    _send({})
""",
    "write": """\
    name = args["name"]
    leaf, part = name.split("/")[-1], args["part"]
    d = _dir(name, create=args["first"])
    try:
        st = _refuse_link(name, leaf, d)
        if args["first"] and st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(name + " is a directory")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_TRUNC if args["first"] else os.O_APPEND
        try:
            with open(os.open(part, flags, 0o666, dir_fd=d), "wb") as f:
                for buf in _parent.get("buffers") or ():
                    f.write(buf)
            if args["last"]:
                os.replace(part, leaf, src_dir_fd=d, dst_dir_fd=d)
        except BaseException:
            try:
                os.remove(part, dir_fd=d)
            except OSError:
                pass
            raise
        done = os.stat(leaf if args["last"] else part, dir_fd=d, follow_symlinks=False)
    finally:
        os.close(d)
    _send({"size": done.st_size})
""",
    "abort_write": """\
    try:
        d = _dir(args["name"])
    except OSError:
        d = None
    if d is not None:
        try:
            os.remove(args["part"], dir_fd=d)
        except OSError:
            pass
        finally:
            os.close(d)
    _send({})
""",
    "read": """\
    name = args["name"]
    d = _dir(name)
    try:
        leaf = name.split("/")[-1]
        _refuse_link(name, leaf, d)
        # O_NONBLOCK: a FIFO must not hang the kernel; it is refused below.
        fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=d)
    finally:
        os.close(d)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(name + " is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise PermissionError(name + " is not a regular file")
        os.set_blocking(fd, True)
        _send({"size": st.st_size})
        while True:
            buf = f.read(args["chunk_size"])
            if not buf:
                break
            _send({}, [buf])
    _send({"eof": True})
""",
    "list": """\
    files = []
    root = args["root"]
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for n in names:
            if n.startswith(PARTIAL):
                continue
            full = os.path.join(top, n)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):  # not links: they are not followed
                files.append([os.path.relpath(full, root).replace(os.sep, "/"), st.st_size])
    _send({"files": files})
""",
    "install": """\
    import subprocess, sys
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
         "--no-input", *args["packages"],
         # In a sandbox the Python installation is read-only: packages go into the box.
         *(["--target", os.environ["CODEBOX_SITE"]] if os.environ.get("CODEBOX_SITE") else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, errors="replace",
    )
    _send({"returncode": proc.returncode, "output": proc.stdout[-20000:]})
""",
    # A command in a session of its own, so a timeout or an interrupt can end it and
    # everything it started (its process group). Both pipes are read as data arrives, each
    # piece sent at once as raw bytes; the kernel keeps none of it. When the command exits,
    # what it left running in its group is ended too: nothing outlives the call.
    "shell": """\
    import selectors, signal, subprocess, time
    command = args["command"]
    cwd = _path(args["cwd"]) if args["cwd"] else args["root"]
    if not os.path.isdir(cwd):
        raise FileNotFoundError("no directory " + repr(args["cwd"]) + " in the box")
    env = dict(os.environ, **args["env"]) if args["env"] else None
    deadline = None if args["timeout"] is None else time.monotonic() + args["timeout"]
    try:
        proc = subprocess.Popen(
            command, shell=isinstance(command, str), cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
    except OSError as exc:  # no such program, or not executable: data, as a shell has it
        program = command if isinstance(command, str) else command[0]
        _send({"stream": "stderr"}, [(program + ": " + exc.strerror + "\\n").encode()])
        _send({"exit_code": 127 if isinstance(exc, FileNotFoundError) else 126,
               "timed_out": False})
        return

    def end_group():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    sel = selectors.DefaultSelector()
    exit_fd, timed_out = None, False
    try:
        open_pipes = 0
        for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            try:
                import fcntl
                fcntl.fcntl(pipe.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ: fewer, larger reads
            except (ImportError, OSError):
                pass
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe.fileno(), selectors.EVENT_READ, name)
            open_pipes += 1
        try:
            exit_fd = os.pidfd_open(proc.pid)
            sel.register(exit_fd, selectors.EVENT_READ, None)
        except (AttributeError, OSError):
            exit_fd = None  # no pidfd: poll for the exit instead
        ended = False
        drain_until = None
        while True:
            now = time.monotonic()
            if not ended and (proc.poll() is not None or (deadline is not None
                                                          and now >= deadline)):
                timed_out = proc.returncode is None
                end_group()
                # Pipes still held by a process that left the group are not waited for.
                ended, drain_until = True, now + 2.0
            if ended and (not open_pipes or now >= drain_until):
                break
            wait = drain_until if ended else deadline
            wait = None if wait is None else max(0.0, wait - now)
            if exit_fd is None and not ended:
                wait = 0.05 if wait is None else min(wait, 0.05)
            for key, _ in sel.select(wait):
                if key.data is None:
                    sel.unregister(exit_fd)
                    continue
                data = os.read(key.fd, 1 << 20)
                if data:
                    _send({"stream": key.data}, [data])
                else:
                    sel.unregister(key.fd)
                    open_pipes -= 1
    except KeyboardInterrupt:
        pass  # the box was interrupted: the command ends, and says how below
    finally:
        end_group()
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)
        proc.stdout.close()
        proc.stderr.close()
        code = proc.wait()
    _send({"exit_code": code, "timed_out": timed_out})
""",
    "remove": """\
    import shutil
    path = _path(args["name"])
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    else:
        raise FileNotFoundError("no file or directory " + repr(args["name"]) + " in the box")
    _send({})
""",
    "rename": """\
    source, destination = _path(args["name"]), _path(args["destination"])
    if not os.path.lexists(source):
        raise FileNotFoundError("no file or directory " + repr(args["name"]) + " in the box")
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.replace(source, destination)
    _send({"info": _info(destination)})
""",
    "make_dir": """\
    path = _path(args["name"])
    os.makedirs(path, exist_ok=True)
    _send({"info": _info(path)})
""",
    "exists": """\
    _send({"exists": os.path.lexists(_path(args["name"]))})
""",
    "file_info": """\
    path = _path(args["name"])
    if not os.path.lexists(path):
        raise FileNotFoundError("no file or directory " + repr(args["name"]) + " in the box")
    _send({"info": _info(path)})
""",
}

# `_info` for the operations that describe a path: its size (None for a directory),
# whether it is a directory, and its modification time (seconds since the epoch).
_INFO = """\
    def _info(path):
        import stat
        st = os.stat(path, follow_symlinks=False)  # a link's target may be outside
        is_dir = stat.S_ISDIR(st.st_mode)
        return {"size": None if is_dir else st.st_size, "is_dir": is_dir,
                "modified": st.st_mtime}
"""
_DESCRIBING = ("rename", "make_dir", "file_info")
_BODIES.update(_SNAPSHOT_BODIES)


def snippet(op: str, **args: Any) -> str:
    """The code of kernel operation ``op`` with its arguments."""
    body = (_INFO if op in _DESCRIBING else "") + _BODIES[op]
    code = _PRELUDE + body + _EPILOGUE
    code = code.replace("PARTIAL", repr(PARTIAL_PREFIX)).replace("MSG_TYPE", repr(DATA_MSG_TYPE))
    code = code.replace("HEAD_FORMAT", repr(HEAD_FORMAT))
    # As one string literal the code passes IPython's cell transformations in one token
    # (~0.4 ms instead of ~7 ms for the longer snippets); the kernel compiles each snippet
    # once (kept on the kernel object, not in the user's namespace) and runs it in globals
    # of its own, with its arguments.
    return (
        "exec((lambda cache, src: cache.get(src) or cache.setdefault(src, compile(src, "
        "'<codebox>', 'exec')))(get_ipython().kernel.__dict__.setdefault("
        f"'_codebox_compiled', {{}}), {code!r}), "
        f"{{'get_ipython': get_ipython, 'ARGS': {args!r}}})"
    )


class KernelDialect(Protocol):
    """The code of each thing a box does in its kernel; every answer comes as
    ``data_msg_type`` messages (the arguments are checked already)."""

    data_msg_type: str
    warm_up: str
    """Run once, silently, in a pooled kernel before it is handed out."""

    def setup(self, root: str | None, env: dict[str, str]) -> str:
        """Enter ``root`` (None: make a temporary one), set ``env``; answer ``{"root",
        "started"}``: the request id of the last user run a previous process of this kernel
        began (None if unknown), so a run whose kernel died can say whether it started."""

    def cleanup(self, root: str | None) -> str:
        """Remove ``root`` (a directory the kernel made; None: the one it was set up in);
        answer ``{}``."""

    def write(self, root: str, name: str, part: str, first: bool, last: bool) -> str:
        """Append the request's buffers to ``part``; on ``last`` rename it to ``name``."""

    def abort_write(self, root: str, name: str, part: str) -> str:
        """Remove the partial file of a failed upload."""

    def read(self, root: str, name: str, chunk_size: int) -> str:
        """Answer ``{"size"}``, then the content in buffers of ``chunk_size``."""

    def list_files(self, root: str) -> str:
        """Answer ``{"files": [[name, size], ...]}``."""

    def install(self, root: str, packages: list[str]) -> str:
        """Install packages; answer ``{"returncode", "output"}``."""

    def shell(self, root: str, command: str | list[str], cwd: str | None,
              env: dict[str, str], timeout: float | None) -> str:
        """Run a command: ``{"stream"}`` messages with its bytes, then ``{"exit_code",
        "timed_out"}``."""

    def file_op(self, op: str, root: str, name: str, **args: Any) -> str:
        """``remove``, ``rename`` (``destination``), ``make_dir``, ``exists``,
        ``file_info``: answer ``{}``, ``{"info"}`` or ``{"exists"}``."""

    def snapshot(self, root: str, chunk_size: int, limit: int | None) -> str:
        """Send the box's files, packages and variables as records (`_snapshot_code`):
        ``{"part"}`` messages with their bytes, at most ``limit`` bytes in all, then
        ``{"done", "unpicklable", "reasons"}``."""

    def restore(self, root: str, first: bool) -> str:
        """Take the request's buffers as the next bytes of a snapshot's records (``first``:
        a new restore); answer ``{}``."""

    def restore_end(self) -> str:
        """Finish a restore; answer ``{"failed": [what could not be restored]}``."""

    def missing(self, requirements: list[str]) -> str:
        """Answer ``{"missing": [...]}``: the requirements not installed in the kernel."""


class IPythonDialect:
    """The dialect of IPython kernels (ipykernel): each operation is a snippet."""

    data_msg_type = DATA_MSG_TYPE
    # IPython's first cell costs ~10 ms more than the next ones.
    warm_up = "import os, tempfile"

    def setup(self, root: str | None, env: dict[str, str]) -> str:
        return snippet("setup", root=root, env=env)

    def cleanup(self, root: str | None) -> str:
        return snippet("cleanup", root=root)

    def write(self, root: str, name: str, part: str, first: bool, last: bool) -> str:
        return snippet("write", root=root, name=name, part=part, first=first, last=last)

    def abort_write(self, root: str, name: str, part: str) -> str:
        return snippet("abort_write", root=root, name=name, part=part)

    def read(self, root: str, name: str, chunk_size: int) -> str:
        return snippet("read", root=root, name=name, chunk_size=chunk_size)

    def list_files(self, root: str) -> str:
        return snippet("list", root=root)

    def install(self, root: str, packages: list[str]) -> str:
        return snippet("install", root=root, packages=packages)

    def shell(self, root: str, command: str | list[str], cwd: str | None,
              env: dict[str, str], timeout: float | None) -> str:
        return snippet("shell", root=root, command=command, cwd=cwd, env=env, timeout=timeout)

    def file_op(self, op: str, root: str, name: str, **args: Any) -> str:
        if op not in _FILE_OPS:
            raise ValueError(f"not a file operation: {op!r}")
        return snippet(op, root=root, name=name, **args)

    def snapshot(self, root: str, chunk_size: int, limit: int | None) -> str:
        return snippet("snapshot", root=root, chunk_size=chunk_size, limit=limit)

    def restore(self, root: str, first: bool) -> str:
        return snippet("restore", root=root, first=first)

    def restore_end(self) -> str:
        return snippet("restore_end")

    def missing(self, requirements: list[str]) -> str:
        return snippet("missing", requirements=requirements)


_FILE_OPS = ("remove", "rename", "make_dir", "exists", "file_info")

IPYTHON = IPythonDialect()


def dialect_for(kernel_name: str) -> KernelDialect:
    """The dialect of a kernelspec: IPython for every Python kernel (the only language so
    far; another one is a class beside `IPythonDialect`, chosen here)."""
    return IPYTHON


def started_marker(root: str, temp_dir: str) -> str:
    """Where a plain kernel of this machine keeps the id of the last run it began (see
    the setup snippet's ``MARKER``): the box removes it when it stops."""
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    return os.path.join(temp_dir, ".codebox-started-" + digest)
