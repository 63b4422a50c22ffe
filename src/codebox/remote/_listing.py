"""The lifecycle calls of a `CodeBox`: the key's sessions (extension ``list``) and a
session's lifetime (extension ``lifetime``), written once for the sync and async twins."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .._lifetimes import check_lifetime
from .._protocol import LIFETIME, LIST
from ..schema import BoxInfo
from ..settings import CodeBoxSettings
from ._ops import ClientState, Op, call, capabilities, session
from ._replies import require
from ._requests import lifetime_request, sessions_request

if TYPE_CHECKING:
    from ._box import CodeBox


def sessions(st: ClientState) -> Op[list[BoxInfo]]:
    """The sessions of the box's key, on the whole server."""
    require((yield from capabilities(st)), LIST, "list")
    return (yield from call(st, sessions_request()))


def set_lifetime(st: ClientState, seconds: float | None) -> Op[datetime | None]:
    """Give the session a lifetime from now; when it expires."""
    seconds = check_lifetime(seconds)
    sid = yield from session(st)
    require((yield from capabilities(st)), LIFETIME, "set_lifetime")
    return (yield from call(st, lifetime_request(sid, seconds)))


def _local(api_key: str | None, base_url: str | None,
           settings: CodeBoxSettings | None) -> bool:
    from ._box import _resolve, _wants_local

    return _wants_local(_resolve(api_key, base_url, settings, None), False)


def _box(cls: type[CodeBox], api_key: str | None, base_url: str | None,
         settings: CodeBoxSettings | None) -> CodeBox:
    box = cls(api_key, base_url, settings=settings)
    assert isinstance(box, cls)
    return box


def list_boxes(cls: type[CodeBox], api_key: str | None, base_url: str | None,
               settings: CodeBoxSettings | None) -> list[BoxInfo]:
    """`CodeBox.list`: the key's sessions, or without a key this process's `LocalBox`es."""
    if _local(api_key, base_url, settings):
        from ..local import LocalBox

        return LocalBox.list()
    box = _box(cls, api_key, base_url, settings)
    try:
        return box._call(sessions(box._state))
    finally:
        box.detach()


async def alist_boxes(cls: type[CodeBox], api_key: str | None, base_url: str | None,
                      settings: CodeBoxSettings | None) -> list[BoxInfo]:
    """Async version of `list_boxes`."""
    if _local(api_key, base_url, settings):
        from ..local import LocalBox

        return await LocalBox.alist()
    box = _box(cls, api_key, base_url, settings)
    try:
        return await box._acall(sessions(box._state))
    finally:
        await box.adetach()
