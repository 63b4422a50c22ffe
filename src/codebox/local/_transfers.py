"""Files in and out of a `LocalBox`, through its kernel (no shared filesystem needed):
`upload` in chunks (two in flight: the next travels while the kernel writes this one),
`download` whole, `read` piece by piece for a stream that never holds the whole file.
Pure: generators that yield requests and receive results."""

from __future__ import annotations

import io

from .._engine import Emit, OnProgress, Op
from ..errors import CodeBoxError
from ..schema import CodeBoxFile
from ._dialect import partial_name
from ._jupyter import Message
from ._kernel import Call, KernelConfig, KernelState, call, finish, healing, submit
from ._lifecycle import ensure_kernel

READ_CHUNK_SIZE = 1024 * 1024
"""Bytes per message of a streamed read: a few of them in flight is all its reader holds."""


def upload(st: KernelState, cfg: KernelConfig, name: str, data: bytes | memoryview,
           timeout: float, on_progress: OnProgress | None = None) -> Op[CodeBoxFile]:
    return (yield from healing(lambda: _upload(st, cfg, name, data, timeout, on_progress)))


def _upload(st: KernelState, cfg: KernelConfig, name: str, data: bytes | memoryview,
            timeout: float, on_progress: OnProgress | None) -> Op[CodeBoxFile]:
    view = memoryview(data).cast("B")
    yield from ensure_kernel(st, cfg)
    root = st.root
    assert root is not None
    size, step = len(view), cfg.chunk_size
    offsets = range(0, size, step) if size else [0]
    what = f"upload {name!r}"
    part = partial_name(name.rsplit("/", 1)[-1])
    calls: dict[str, Call] = {}
    sizes: dict[str, int] = {}
    done = 0

    def written() -> Op[None]:  # the oldest chunk in flight is on disk
        nonlocal done
        msg_id = next(iter(calls))
        yield from finish(st, cfg, calls, msg_id, timeout, what)
        done += sizes.pop(msg_id)
        if on_progress is not None:
            on_progress(done, size)

    if on_progress is not None:
        on_progress(0, size)
    try:
        for offset in offsets:
            code = cfg.dialect.write(root, name, part, first=offset == 0,
                                     last=offset + step >= size)
            chunk = view[offset:offset + step]
            sizes[(yield from submit(st, calls, code, (chunk,) if size else ()))] = len(chunk)
            if len(calls) == 2:
                yield from written()
        while calls:
            yield from written()
    except BaseException:
        if st.kernel_id is not None:  # (a kernel that went away cleans up nothing)
            try:
                yield from call(st, cfg, cfg.dialect.abort_write(root, name, part), 5.0,
                                "clean up")
            except CodeBoxError:
                pass
        raise
    return CodeBoxFile(name=name, size=size)


def download(st: KernelState, cfg: KernelConfig, name: str, timeout: float,
             on_progress: OnProgress | None = None) -> Op[CodeBoxFile]:
    return (yield from healing(lambda: _download(st, cfg, name, timeout, on_progress)))


def _download(st: KernelState, cfg: KernelConfig, name: str, timeout: float,
              on_progress: OnProgress | None) -> Op[CodeBoxFile]:
    yield from ensure_kernel(st, cfg)
    assert st.root is not None
    # BytesIO hands its buffer over in getvalue() without a copy (a bytearray would need
    # one more copy of the whole file to become bytes).
    buf = io.BytesIO()
    total = 0

    def on_data(msg: Message) -> None:
        nonlocal total
        if "size" in msg.content:
            total = msg.content["size"]
        for part in msg.buffers:
            buf.write(part)
        if on_progress is not None and (msg.buffers or "size" in msg.content):
            on_progress(buf.tell(), max(total, buf.tell()))

    code = cfg.dialect.read(st.root, name, cfg.chunk_size)
    yield from call(st, cfg, code, timeout, f"download {name!r}", on_data=on_data)
    content = buf.getvalue()
    buf.close()
    return CodeBoxFile(name=name, size=len(content), content=content)


def _pieces(msg: Message) -> list[Emit]:
    return [Emit(msg.content["size"])] if "size" in msg.content else [
        Emit(part) for part in msg.buffers]


def read(st: KernelState, cfg: KernelConfig, name: str, timeout: float) -> Op[None]:
    """Emit the file's size, then its content in pieces of at most `READ_CHUNK_SIZE` as the
    kernel sends them, never holding the whole file."""
    yield from ensure_kernel(st, cfg)
    assert st.root is not None
    code = cfg.dialect.read(st.root, name, min(cfg.chunk_size, READ_CHUNK_SIZE))
    calls: dict[str, Call] = {}
    msg_id = yield from submit(st, calls, code, emit=_pieces)
    yield from finish(st, cfg, calls, msg_id, timeout, f"download {name!r}")
