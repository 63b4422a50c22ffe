"""What the framework adapters share: the box they run on, given or made from arguments."""

from __future__ import annotations

import inspect
from typing import Any

from ..base import BaseBox


def make_box(**options: Any) -> BaseBox:
    """A new box from the arguments of one: a `CodeBox` when they are all `CodeBox`'s
    (which is a `LocalBox` without an API key), else a `LocalBox` (``sandbox=``,
    ``working_dir=``, ``gateway_url=``, ...).

    Raises:
        TypeError: Arguments that neither box takes.
    """
    from ..local import LocalBox
    from ..remote import CodeBox

    remote = set(inspect.signature(CodeBox.__init__).parameters) - {"self"}
    if set(options) <= remote:
        return CodeBox(**options)
    return LocalBox(**options)


def box_from(box: BaseBox | None, options: dict[str, Any]) -> tuple[BaseBox, bool]:
    """The box an adapter runs on, and whether the adapter owns it (made it, so stops it).

    Raises:
        ValueError: Both a box and the arguments of one.
    """
    if box is not None:
        if options:
            raise ValueError(f"give a box or the arguments of one, not both: {sorted(options)}")
        return box, False
    return make_box(**options), True
