"""The arguments of every box operation, checked once, before anything is sent: the same
rules on `LocalBox`, on `CodeBox` and in ``codebox serve``. A wrong call is a `ValueError`;
a file name that breaks the rules of `_paths` is a `CodeBoxError`. Pure, no I/O."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._paths import check_file_name
from .errors import CodeBoxError

Command = str | Sequence[str]
"""A command: a string for ``/bin/sh -c``, or a program and its arguments (no shell)."""

Content = bytes | bytearray | memoryview | str
"""What ``upload`` accepts: bytes, or text (encoded as UTF-8)."""


def code_to_run(code: str | None, file_path: str | os.PathLike[str] | None) -> str:
    """The code a ``run`` call means: ``code``, or the text of the local file ``file_path``.

    Raises:
        ValueError: Both or neither were given, or ``code`` is not a ``str``.
    """
    if (code is None) == (file_path is None):
        raise ValueError("run() takes either code or file_path=, not both and not neither")
    if code is not None:
        if not isinstance(code, str):
            raise ValueError(f"code must be a str, not {type(code).__name__}")
        return code
    return Path(file_path).read_text(encoding="utf-8")  # type: ignore[arg-type]


def check_timeout(timeout: float | None, default: float | None = None) -> float | None:
    """A timeout in seconds; ``None`` means ``default`` (``None``: no limit).

    Raises:
        ValueError: Not a positive finite number (``0`` included: it is not "no limit").
    """
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return float(timeout)


def check_content(content: Any) -> bytes | memoryview:
    """Upload content as bytes (text is encoded as UTF-8), without a copy where possible.

    Raises:
        ValueError: Neither bytes nor text.
    """
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, (bytes, bytearray, memoryview)):
        return memoryview(content).cast("B")
    raise ValueError(f"upload content must be bytes or str, not {type(content).__name__}")


def check_package_names(package_names: Iterable[str]) -> tuple[str, ...]:
    """The package names of an install.

    Raises:
        ValueError: There are none, or one is not a non-empty string, or one starts with
            ``-`` (an option, not a package).
    """
    names = tuple(package_names)
    if not names:
        raise ValueError("install() needs at least one package name")
    for name in names:
        if not isinstance(name, str) or not name.strip() or name.startswith("-"):
            raise ValueError(f"invalid package name {name!r}")
    return names


def check_command(command: Any) -> str | list[str]:
    """The command as sent to the box: a non-empty ``str``, or a non-empty list of ``str``.

    Raises:
        ValueError: Anything else, or a NUL byte (which no program can receive).
    """
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("the command is empty")
        parts = [command]
    elif isinstance(command, Sequence) and not isinstance(command, (bytes, bytearray)):
        parts = list(command)
        if not parts:
            raise ValueError("the command is empty: give a program and its arguments")
        if not all(isinstance(p, str) for p in parts):
            raise ValueError("every item of a command list must be a str")
        if not parts[0]:
            raise ValueError("the command names no program")
    else:
        raise ValueError(f"a command is a str or a list of str, not {type(command).__name__}")
    if any("\x00" in p for p in parts):
        raise ValueError("a command cannot hold a NUL byte")
    return command if isinstance(command, str) else parts


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Environment variables as sent to the box (``{}`` for none).

    Raises:
        ValueError: A name that is empty or holds ``=``, or a name or value that is not a
            ``str`` or holds a NUL byte.
    """
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a dict of str to str, not {type(env).__name__}")
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"env must map str to str: {name!r}={value!r}")
        if not name or "=" in name or "\x00" in name or "\x00" in value:
            raise ValueError(f"not a valid environment variable: {name!r}")
    return dict(env)


def check_cwd(cwd: str | None) -> str | None:
    """The directory a command starts in, relative to the box (None: the box's own).

    Raises:
        CodeBoxError: The path breaks the file-name rules (absolute, ``..``, NUL, ...).
    """
    if cwd is None or cwd in (".", "./"):
        return None
    try:
        return check_file_name(cwd)
    except CodeBoxError as exc:
        raise CodeBoxError(f"invalid cwd: {exc.message}") from None
