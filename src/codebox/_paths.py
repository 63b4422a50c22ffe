"""The rules for file names inside a box, shared by every backend.

A file name is a relative path (``"data/x.csv"``); it may not be absolute, escape the box
with ``..`` or hold a NUL byte. Checked before anything is sent or written.
"""

from __future__ import annotations

import posixpath

from .errors import CodeBoxError


def check_file_name(file_name: str) -> str:
    """Return ``file_name`` normalised to a relative POSIX path inside the box.

    Raises:
        CodeBoxError: The name is empty, absolute, escapes with ``..``, names the box's
            root itself, or holds a NUL byte.
    """
    if not isinstance(file_name, str):
        raise CodeBoxError(f"file name must be a str, not {type(file_name).__name__}")
    if "\x00" in file_name:
        raise CodeBoxError(f"invalid file name {file_name!r}: it contains a NUL byte")
    name = file_name.replace("\\", "/")
    if not name.strip():
        raise CodeBoxError("invalid file name: it is empty")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise CodeBoxError(f"invalid file name {file_name!r}: absolute paths are not allowed")
    if ".." in name.split("/"):
        raise CodeBoxError(f"invalid file name {file_name!r}: '..' is not allowed")
    normal = posixpath.normpath(name)
    if normal in (".", ""):
        raise CodeBoxError(f"invalid file name {file_name!r}: it names no file")
    return normal
