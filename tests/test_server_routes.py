"""The server's routes in-process (``httpx.ASGITransport``) over a box in memory: what a
route answers when the box fails mid-stream, and downloads that stream — no kernel, no
server process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from codebox import CodeBox
from codebox.errors import CodeBoxNotFoundError, CodeBoxServerError, KernelDiedError
from codebox.schema import CodeBoxOutput, CodeBoxStatus, OutputChunk
from codebox.server import store
from codebox.server.app import API_PREFIX, create_app
from codebox.server.sessions import Session, owner_of
from codebox.server.settings import ServerSettings

KEY = "route-key"


class MemoryBox:
    """The async operations the routes use, in memory: runs print ``a`` then fail (or
    succeed); files are a dict."""

    kernel_id = "kernel-7"
    working_dir = None

    def __init__(self) -> None:
        self.fail_with: Exception | None = None
        self.files = {"big.bin": b"x" * 100_000}
        self.held = 0  # reads in progress

    async def arun(self, code, *, timeout=None, on_output=None) -> CodeBoxOutput:
        chunk = OutputChunk(type="stdout", content="a\n")
        if on_output is not None:
            on_output(chunk)
        await asyncio.sleep(0)
        if self.fail_with is not None:
            raise self.fail_with
        return CodeBoxOutput.from_chunks([chunk])

    async def astatus(self) -> CodeBoxStatus:
        return CodeBoxStatus(status="running")

    async def _aread(self, name, *, timeout=None):
        if name not in self.files:
            raise CodeBoxNotFoundError(f"download {name!r}: FileNotFoundError: no such file")
        data = self.files[name]
        self.held += 1
        try:
            yield len(data)
            for i in range(0, len(data), 4096):
                yield memoryview(data)[i:i + 4096]
        finally:
            self.held -= 1


@pytest.fixture
def app_and_box(monkeypatch):
    app = create_app(ServerSettings(api_keys=[KEY], gateway_url="http://127.0.0.1:9"))
    box = MemoryBox()
    manager = app.state.manager
    monkeypatch.setattr(store, "new_session_id", lambda: 7)
    manager.store.reserve(owner_of(KEY), 1)
    manager.store.set_kernel(7, box.kernel_id, None)
    manager._sessions[7] = Session(7, owner_of(KEY), box, None, manager.generation,
                                   kernel_id=box.kernel_id)
    return app, box


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app),
                             base_url=f"http://test{API_PREFIX}",
                             headers={"Authorization": f"Bearer {KEY}"})


def test_a_box_failure_mid_stream_ends_the_stream_with_its_status(app_and_box):
    app, box = app_and_box
    box.fail_with = KernelDiedError("the kernel died under the run")

    async def main():
        async with client(app) as api:
            r = await api.post("/codebox/7/run/stream", json={"code": "x"})
            plain = await api.post("/codebox/7/run", json={"code": "x"})
        return r, plain

    r, plain = asyncio.run(main())
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines == [{"type": "stdout", "content": "a\n"},
                     {"type": "end", "error": {"status": 503,
                                               "detail": "the kernel died under the run"}}]
    # The same failure on the plain route: the same status and detail.
    assert (plain.status_code, plain.json()) == (503, {"detail": "the kernel died under the run"})


def test_the_client_raises_the_routes_error_with_the_chunks(app_and_box):
    app, box = app_and_box
    box.fail_with = KernelDiedError("the kernel died under the run")
    remote = CodeBox(api_key=KEY, base_url=f"http://test{API_PREFIX}", session_id=7)
    remote._transport = httpx.ASGITransport(app)

    async def main():
        chunks = []
        with pytest.raises(CodeBoxServerError, match="kernel died") as caught:
            async with remote.astream("x") as stream:
                async for chunk in stream:
                    chunks.append(chunk)
        return chunks, caught.value

    chunks, error = asyncio.run(main())
    assert chunks == error.chunks == [OutputChunk(type="stdout", content="a\n")]
    assert error.http_status == 503


def test_an_unexpected_failure_mid_stream_is_a_500_line(app_and_box):
    app, box = app_and_box
    box.fail_with = RuntimeError("bug")

    async def main():
        async with client(app) as api:
            return await api.post("/codebox/7/run/stream", json={"code": "x"})

    last = json.loads(asyncio.run(main()).text.splitlines()[-1])
    assert last == {"type": "end", "error": {"status": 500, "detail": "internal server error"}}


def test_a_download_streams_with_its_length(app_and_box):
    app, box = app_and_box

    async def main():
        async with client(app) as api:
            got = await api.get("/codebox/7/download", params={"file_name": "big.bin"})
            missing = await api.get("/codebox/7/download", params={"file_name": "nope"})
        return got, missing

    got, missing = asyncio.run(main())
    assert got.status_code == 200 and got.content == box.files["big.bin"]
    assert got.headers["content-length"] == "100000"
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert box.held == 0  # the read was closed once sent
