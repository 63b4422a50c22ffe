"""Listing and changing the files of a `LocalBox`, in its kernel: every path is checked
already, and resolved under the box's root without following links (see `_dialect`).
Pure: generators that yield requests and receive results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .._engine import Op
from ..schema import CodeBoxFile, CodeBoxStatus
from ._kernel import KernelConfig, KernelState, call, healing
from ._lifecycle import ensure_kernel


def list_files(st: KernelState, cfg: KernelConfig) -> Op[list[CodeBoxFile]]:
    def once() -> Op[list[CodeBoxFile]]:
        yield from ensure_kernel(st, cfg)
        assert st.root is not None
        (result,) = yield from call(st, cfg, cfg.dialect.list_files(st.root), cfg.timeout,
                                    "list files")
        files = [CodeBoxFile(name=n, size=s) for n, s in result.content["files"]]
        return sorted(files, key=lambda f: f.name)

    return (yield from healing(once))


def _file_op(st: KernelState, cfg: KernelConfig, op: str, name: str, what: str,
             **args: Any) -> Op[dict[str, Any]]:
    """Run the dialect's file operation ``op`` on ``name``; its answer."""

    def once() -> Op[dict[str, Any]]:
        yield from ensure_kernel(st, cfg)
        assert st.root is not None
        (result,) = yield from call(st, cfg, cfg.dialect.file_op(op, st.root, name, **args),
                                    cfg.timeout, f"{what} {name!r}")
        return result.content

    return (yield from healing(once))


def _described(name: str, info: dict[str, Any]) -> CodeBoxFile:
    modified = info.get("modified")
    return CodeBoxFile(
        name=name, size=info.get("size"), is_dir=bool(info.get("is_dir")),
        modified=None if modified is None else datetime.fromtimestamp(modified, UTC),
    )


def remove(st: KernelState, cfg: KernelConfig, name: str) -> Op[CodeBoxStatus]:
    yield from _file_op(st, cfg, "remove", name, "remove")
    return CodeBoxStatus(status=f"{name} removed")


def rename(st: KernelState, cfg: KernelConfig, name: str, new: str) -> Op[CodeBoxFile]:
    answer = yield from _file_op(st, cfg, "rename", name, "rename", destination=new)
    return _described(new, answer["info"])


def make_dir(st: KernelState, cfg: KernelConfig, name: str) -> Op[CodeBoxFile]:
    answer = yield from _file_op(st, cfg, "make_dir", name, "make directory")
    return _described(name, answer["info"])


def exists(st: KernelState, cfg: KernelConfig, name: str) -> Op[bool]:
    answer = yield from _file_op(st, cfg, "exists", name, "check")
    return bool(answer["exists"])


def file_info(st: KernelState, cfg: KernelConfig, name: str) -> Op[CodeBoxFile]:
    answer = yield from _file_op(st, cfg, "file_info", name, "describe")
    return _described(name, answer["info"])
