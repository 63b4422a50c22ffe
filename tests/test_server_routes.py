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
from codebox.schema import CLEAR_OUTPUT, CodeBoxOutput, CodeBoxStatus, OutputChunk, fold_chunks
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
        self.live = [OutputChunk(type="stdout", content="a\n")]  # what a run hands on live
        self.pulled = 0  # chunks taken from the box by a stream so far

    def astream(self, code, *, timeout=None) -> MemoryStream:
        return MemoryStream(self)

    async def arun(self, code, *, timeout=None, on_output=None) -> CodeBoxOutput:
        for chunk in self.live:
            self.pulled += 1
            if on_output is not None:
                on_output(chunk)
            await asyncio.sleep(0)
        if self.fail_with is not None:
            raise self.fail_with
        return CodeBoxOutput.from_chunks(fold_chunks(self.live))

    async def astatus(self) -> CodeBoxStatus:
        return CodeBoxStatus(status="running")

    def astream_download(self, name, *, timeout=None):
        return _MemoryRead(self, name)


class _MemoryRead:
    """A download in pieces of 4096 bytes, counted as held from `open` to `aclose`."""

    def __init__(self, box: MemoryBox, name: str) -> None:
        self.box, self.name, self.opened = box, name, False

    async def open(self) -> int:
        if self.name not in self.box.files:
            raise CodeBoxNotFoundError(f"download {self.name!r}: FileNotFoundError: no such file")
        self.box.held += 1
        self.opened = True
        return len(self.box.files[self.name])

    async def __aiter__(self):
        data = self.box.files[self.name]
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    async def aclose(self) -> None:
        if self.opened:
            self.opened = False
            self.box.held -= 1


class MemoryStream:
    """`MemoryBox.astream`: the run's chunks, one per pull, then its output as ``result``."""

    def __init__(self, box: MemoryBox) -> None:
        self.box, self.result = box, None

    async def __aenter__(self) -> MemoryStream:
        return self

    async def __aexit__(self, *exc) -> None:
        pass

    async def __aiter__(self):
        for chunk in self.box.live:
            self.box.pulled += 1
            yield chunk
            await asyncio.sleep(0)
        if self.box.fail_with is not None:
            raise self.box.fail_with
        self.result = CodeBoxOutput.from_chunks(fold_chunks(self.box.live))


@pytest.fixture
def app_and_box(monkeypatch):
    app = create_app(ServerSettings(api_keys=[KEY], gateway_url="http://127.0.0.1:9"))
    box = MemoryBox()
    manager = app.state.manager
    monkeypatch.setattr(store, "new_session_id", lambda: 7)

    async def record():
        await manager.store.reserve(owner_of(KEY), 1)
        await manager.store.set_kernel(7, box.kernel_id, None)

    asyncio.run(record())
    manager._sessions[7] = Session(7, owner_of(KEY), box, None, kernel_id=box.kernel_id)
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
    remote._http_transport = httpx.ASGITransport(app)

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


FIGURE = OutputChunk(type="image/png", content="iVBORw0K",
                     data={"image/png": "iVBORw0K", "text/plain": "<Figure size 640x480>"})
LIVE = [
    OutputChunk(type="stdout", content="gone\n"),
    OutputChunk(type=CLEAR_OUTPUT, content="", data={"wait": True}),
    OutputChunk(type="text", content="'1'", data={"text/plain": "'1'"}, display_id="d1"),
    OutputChunk(type="stdout", content="kept\n"),
    OutputChunk(type="text", content="'2'", data={"text/plain": "'2'"}, display_id="d1"),
    FIGURE,
]


def test_bundles_and_display_ids_travel_on_every_route(app_and_box):
    app, box = app_and_box
    box.live = LIVE

    async def main():
        async with client(app) as api:
            caps = await api.get("/codebox/capabilities")
            lines = await api.post("/codebox/7/run/stream", json={"code": "x"})
            plain = await api.post("/codebox/7/run", json={"code": "x"})
        return caps.json(), lines.text.splitlines(), plain.json()

    caps, lines, plain = asyncio.run(main())
    assert "bundles" in caps["extensions"]
    items = [json.loads(line) for line in lines]
    assert items[0] == {"type": "stdout", "content": "gone\n"}  # no bundle: no key
    assert items[1] == {"type": CLEAR_OUTPUT, "content": "", "data": {"wait": True}}
    assert items[2] == {"type": "text", "content": "'1'", "data": {"text/plain": "'1'"},
                        "display_id": "d1"}
    assert items[5]["data"] == FIGURE.data
    # The end line and the plain route carry the same output: the live chunks folded.
    folded = [{"type": "text", "content": "'2'", "data": {"text/plain": "'2'"},
               "display_id": "d1"}, {"type": "stdout", "content": "kept\n", "data": None,
                                     "display_id": None}, FIGURE.model_dump()]
    assert items[-1]["output"]["chunks"] == plain["chunks"] == folded


def test_the_client_keeps_bundles_live_and_in_the_result(app_and_box):
    app, box = app_and_box
    box.live = LIVE
    remote = CodeBox(api_key=KEY, base_url=f"http://test{API_PREFIX}", session_id=7)
    remote._http_transport = httpx.ASGITransport(app)

    async def main():
        async with remote.astream("x") as stream:
            chunks = [chunk async for chunk in stream]
        return chunks, await remote.arun("x")

    chunks, out = asyncio.run(main())
    assert chunks == LIVE
    assert out.chunks == fold_chunks(chunks) == fold_chunks(LIVE)
    assert out.images == ["iVBORw0K"] and out.chunks[-1].data["text/plain"].startswith("<Fig")


def test_a_failing_session_store_is_a_503_with_a_reason(app_and_box, monkeypatch):
    from codebox.server.store import StoreUnavailable

    app, _ = app_and_box
    store = app.state.manager.store

    async def down(*args, **kwargs):
        raise StoreUnavailable("the session store failed: connection refused")

    for name in ("get", "sessions_of", "reserve"):
        monkeypatch.setattr(store, name, down)

    async def main():
        async with client(app) as api:
            return [await api.get("/codebox/7/"), await api.get("/codebox/sessions"),
                    await api.get("/codebox/start")]

    for answer in asyncio.run(main()):
        assert answer.status_code == 503
        assert answer.json() == {"detail": "the session store failed: connection refused"}


def test_a_stream_reads_the_box_as_fast_as_its_client_reads(app_and_box):
    """The route takes a chunk from the box only when the client has taken the ones before:
    a slow client holds up the run, not the server's memory."""
    app, box = app_and_box
    box.live = [OutputChunk(type="stdout", content="a\n")] * 1000
    body = json.dumps({"code": "x"}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "server": ("test", 80),
             "path": f"{API_PREFIX}/codebox/7/run/stream", "raw_path": b"", "root_path": "",
             "query_string": b"",
             "headers": [(b"authorization", f"Bearer {KEY}".encode()),
                         (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def main():
        sent: list[bytes] = []
        gone = asyncio.Event()
        taken = asyncio.Semaphore(5)  # the client takes five pieces, then stops reading
        requests = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if requests:
                return requests.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        full = asyncio.Event()

        async def send(message):
            if message["type"] == "http.response.body" and message.get("body"):
                await taken.acquire()
                sent.append(message["body"])
                if len(sent) == 5:
                    full.set()

        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.wait_for(full.wait(), 10)  # (its store calls take a thread's turn)
        for _ in range(200):  # then every chance to run ahead of the client
            await asyncio.sleep(0)
        pulled, written = box.pulled, len(sent)
        gone.set()  # the client leaves: the run ends
        await asyncio.wait_for(task, 10)
        return pulled, written

    pulled, written = asyncio.run(main())
    # Five lines written (a chunk's piece and its newline each), the next one waiting.
    assert written == 5 and pulled <= 4, (pulled, written)


def test_an_unexpected_failure_is_a_500_with_a_json_body(app_and_box):
    app, _ = app_and_box  # the box in memory lists no files: any failure will do

    async def main():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://test{API_PREFIX}",
                                     headers={"Authorization": f"Bearer {KEY}"}) as api:
            return await api.get("/codebox/7/files")

    r = asyncio.run(main())
    assert (r.status_code, r.json()) == (500, {"detail": "internal server error"})
    assert r.headers["content-type"] == "application/json"
