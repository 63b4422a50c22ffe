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
}


def snippet(op: str, **args: Any) -> str:
    """The code of kernel operation ``op`` with its arguments."""
    code = _PRELUDE + _BODIES[op] + _EPILOGUE.replace("ARGS", repr(args))
    return code.replace("PARTIAL", repr(PARTIAL_SUFFIX)).replace("MSG_TYPE", repr(DATA_MSG_TYPE))
