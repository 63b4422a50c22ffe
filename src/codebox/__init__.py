"""codebox: run Python code in an isolated, stateful Jupyter kernel and get the results back.

    from codebox import LocalBox

    with LocalBox() as box:
        print(box.run("1 + 1").content)   # "2"
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import BaseBox
from .errors import CodeBoxError, SandboxUnavailableError
from .sandbox import Sandbox
from .schema import (
    BoxInfo,
    CodeBoxFile,
    CodeBoxOutput,
    CodeBoxStatus,
    CommandResult,
    ExecError,
    OutputChunk,
    Snapshot,
)
from .settings import CodeBoxSettings

__version__ = "0.1.0"

__all__ = [
    "BaseBox",
    "BoxInfo",
    "CodeBox",
    "CodeBoxError",
    "CodeBoxFile",
    "CodeBoxOutput",
    "CodeBoxSettings",
    "CodeBoxStatus",
    "CommandResult",
    "ExecError",
    "LocalBox",
    "OutputChunk",
    "Sandbox",
    "SandboxUnavailableError",
    "Snapshot",
    "Template",
    "__version__",
    "abuild_template",
    "build_template",
]

if TYPE_CHECKING:
    from .local import LocalBox
    from .remote import CodeBox
    from .templates import Template, abuild_template, build_template

_LAZY = {"LocalBox": ".local", "CodeBox": ".remote", "Template": ".templates",
         "build_template": ".templates", "abuild_template": ".templates"}
"""Loaded on first use: a `CodeBox` with a key never imports the gateway or websockets, a
`LocalBox` never imports the REST client, neither imports the template builder."""


def _public(obj: Any) -> Any:
    # Exported names read as `codebox.X` in reprs, docs and tracebacks.
    if isinstance(obj, type):
        obj.__module__ = __name__
    return obj


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = _public(getattr(importlib.import_module(_LAZY[name], __name__), name))
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name])
del _name
