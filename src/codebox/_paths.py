"""The rules for file names inside a box, shared by every backend.

A file name is a relative path (``"data/x.csv"``); it may not be absolute, escape the box
with ``..``, or hold characters that make names lie on a terminal or in a listing: control
characters (C0, DEL, C1) and the Unicode bidirectional controls (a right-to-left override
shows ``exe.txt`` for ``txt.exe``). Each component fits a file system's 255-byte limit.
Checked before anything is sent or written.
"""

from __future__ import annotations

import posixpath

from .errors import CodeBoxError

MAX_COMPONENT_BYTES = 255
"""The most UTF-8 bytes of one component of a name (the limit of Linux file systems)."""

# Bidirectional formatting characters: embeddings, overrides, isolates and marks.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _forbidden(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0 or char in _BIDI or 0xD800 <= code < 0xE000


def check_file_name(file_name: str) -> str:
    """Return ``file_name`` normalised to a relative POSIX path inside the box.

    Raises:
        CodeBoxError: The name is empty, absolute, escapes with ``..``, names the box's
            root itself, holds a control or bidirectional character (named as ``U+XXXX``)
            or a lone surrogate, or has a component longer than 255 UTF-8 bytes.
    """
    if not isinstance(file_name, str):
        raise CodeBoxError(f"file name must be a str, not {type(file_name).__name__}")
    bad = next((c for c in file_name if _forbidden(c)), None)
    if bad is not None:
        what = "a NUL byte" if bad == "\x00" else "a control or bidirectional character"
        raise CodeBoxError(f"invalid file name {file_name!r}: it contains {what} "
                           f"(U+{ord(bad):04X})")
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
    for part in normal.split("/"):
        size = len(part.encode("utf-8"))
        if size > MAX_COMPONENT_BYTES:
            raise CodeBoxError(f"invalid file name {file_name!r}: the component "
                               f"{part[:20]!r}... is {size} bytes long, more than the "
                               f"{MAX_COMPONENT_BYTES} a file system allows")
    return normal
