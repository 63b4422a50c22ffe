"""Deleting a snapshot on the server (extension ``snapshots``): `CodeBox.delete_snapshot`,
written once for the sync and async twins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._protocol import SNAPSHOTS
from ..settings import CodeBoxSettings
from ._ops import ClientState, Op, call, capabilities
from ._replies import require
from ._requests import delete_snapshot_request

if TYPE_CHECKING:
    from ._box import CodeBox


def delete(st: ClientState, snapshot_id: str) -> Op[None]:
    require((yield from capabilities(st)), SNAPSHOTS, "delete_snapshot")
    yield from call(st, delete_snapshot_request(snapshot_id))


def _local(api_key: str | None, base_url: str | None,
           settings: CodeBoxSettings | None) -> CodeBoxSettings | None:
    """The settings of a `LocalBox`, if these arguments make one (no key)."""
    from ._box import _resolve, _wants_local

    resolved = _resolve(api_key, base_url, settings, None)
    return resolved if _wants_local(resolved, False) else None


def delete_snapshot(cls: type[CodeBox], snapshot_id: str, api_key: str | None,
                    base_url: str | None, settings: CodeBoxSettings | None) -> None:
    """`CodeBox.delete_snapshot`: on the server, or without a key this machine's."""
    local = _local(api_key, base_url, settings)
    if local is not None:
        from ..local import LocalBox

        return LocalBox.delete_snapshot(snapshot_id, settings=local)
    box = cls(api_key, base_url, settings=settings)
    try:
        box._call(delete(box._state, snapshot_id))
    finally:
        box.detach()
    return None


async def adelete_snapshot(cls: type[CodeBox], snapshot_id: str, api_key: str | None,
                           base_url: str | None, settings: CodeBoxSettings | None) -> None:
    """Async version of `delete_snapshot`."""
    local = _local(api_key, base_url, settings)
    if local is not None:
        from ..local import LocalBox

        return await LocalBox.adelete_snapshot(snapshot_id, settings=local)
    box = cls(api_key, base_url, settings=settings)
    try:
        await box._acall(delete(box._state, snapshot_id))
    finally:
        await box.adetach()
    return None
