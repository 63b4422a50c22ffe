"""The code codebox runs inside the kernel for its own operations (files, setup, install).

Each snippet is self-contained (it survives kernel restarts), runs as a *silent* execution
(no execution count, no history, no echo) and leaves no names behind in the user's
namespace. It answers with ``codebox_data`` messages on IOPub: JSON content, and file bytes
as raw binary buffers. Upload bytes arrive the same way, as buffers of the execute request.
Parameters are embedded as Python literals; every path is resolved under the box's root.
"""

from __future__ import annotations

from typing import Any

DATA_MSG_TYPE = "codebox_data"
PARTIAL_SUFFIX = ".codebox-part"

# The common head of every snippet: `_send` answers on IOPub under the current request,
# `_path` resolves a checked relative name under the box's root.
_PRELUDE = """\
def __codebox_op(args):
    import os
    _k = get_ipython().kernel
    _parent = _k.get_parent()
    def _send(content, buffers=None):
        _k.session.send(_k.iopub_socket, MSG_TYPE, content, parent=_parent,
                        ident=b"codebox", buffers=buffers)
    def _path(name):
        return os.path.join(args["root"], *name.split("/"))
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
    root = args["root"]
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
    path = _path(args["name"])
    part = path + PARTIAL
    if args["first"]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(args["name"] + " is a directory")
    try:
        with open(part, "wb" if args["first"] else "ab") as f:
            for buf in _parent.get("buffers") or ():
                f.write(buf)
        if args["last"]:
            os.replace(part, path)
    except BaseException:
        try:
            os.remove(part)
        except OSError:
            pass
        raise
    _send({"size": os.path.getsize(path if args["last"] else part)})
""",
    "abort_write": """\
    try:
        os.remove(_path(args["name"]) + PARTIAL)
    except OSError:
        pass
    _send({})
""",
    "read": """\
    path = _path(args["name"])
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        _send({"size": size})
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
            if n.endswith(PARTIAL):
                continue
            full = os.path.join(top, n)
            try:
                size = os.path.getsize(full)
            except OSError:
                continue
            files.append([os.path.relpath(full, root).replace(os.sep, "/"), size])
    _send({"files": files})
""",
    "install": """\
    import subprocess, sys
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
         "--no-input", *args["packages"]],
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
        st = os.stat(path)
        is_dir = stat.S_ISDIR(st.st_mode)
        return {"size": None if is_dir else st.st_size, "is_dir": is_dir,
                "modified": st.st_mtime}
"""
_DESCRIBING = ("rename", "make_dir", "file_info")


def snippet(op: str, **args: Any) -> str:
    """The code of kernel operation ``op`` with its arguments."""
    body = (_INFO if op in _DESCRIBING else "") + _BODIES[op]
    code = _PRELUDE + body + _EPILOGUE
    code = code.replace("PARTIAL", repr(PARTIAL_SUFFIX)).replace("MSG_TYPE", repr(DATA_MSG_TYPE))
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
