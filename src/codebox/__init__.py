"""codebox: run Python code in an isolated, stateful Jupyter kernel and get the results back.

    from codebox import LocalBox

    with LocalBox() as box:
        print(box.run("1 + 1").content)   # "2"
"""

from __future__ import annotations

from .base import BaseBox
from .errors import CodeBoxError
from .local import LocalBox
from .remote import CodeBox
from .schema import CodeBoxFile, CodeBoxOutput, CodeBoxStatus, ExecError, OutputChunk
from .settings import CodeBoxSettings

__version__ = "0.1.0"

__all__ = [
    "BaseBox",
    "CodeBox",
    "CodeBoxError",
    "CodeBoxFile",
    "CodeBoxOutput",
    "CodeBoxSettings",
    "CodeBoxStatus",
    "ExecError",
    "LocalBox",
    "OutputChunk",
    "__version__",
]

# Exported names read as `codebox.X` in reprs, docs and tracebacks.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
