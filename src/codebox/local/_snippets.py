"""The code codebox runs inside the kernel for its own operations (files, setup, install).

Each snippet is self-contained (it survives kernel restarts), runs as a *silent* execution
(no execution count, no history, no echo) and leaves no names behind in the user's
namespace. It answers with ``codebox_data`` messages on IOPub: JSON content, and file bytes
as raw binary buffers. Upload bytes arrive the same way, as buffers of the execute request.
Parameters are embedded as Python literals; every path is resolved under the box's root.
"""

from __future__ import annotations

import hashlib
from typing import Any

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
    root = args["root"] or os.environ.get("CODEBOX_WORK_DIR")  # a sandbox's own directory
    if root is None:
        import tempfile
        root = tempfile.mkdtemp(prefix="codebox-")
    os.makedirs(root, exist_ok=True)
    os.chdir(root)
    _send({"root": os.path.abspath(root)})
""",
    "cleanup": """\
    import shutil
    os.chdir(os.path.dirname(args["root"]))
    shutil.rmtree(args["root"], ignore_errors=True)
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


def snippet(op: str, **args: Any) -> str:
    """The code of kernel operation ``op`` with its arguments."""
    body = (_INFO if op in _DESCRIBING else "") + _BODIES[op]
    code = _PRELUDE + body + _EPILOGUE
    code = code.replace("PARTIAL", repr(PARTIAL_PREFIX)).replace("MSG_TYPE", repr(DATA_MSG_TYPE))
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
