"""Tests of `CodeBox`, the REST client, against a mocked server (respx), in both flavours.

Each test asserts what goes over the wire (method, path, headers, body), not only results.
Retry waits are recorded by patching ``codebox.remote._transport._sleep``/``_asleep``, never
waited.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import os
import time
import uuid
from email.parser import BytesParser

import httpx
import pytest
import respx

from codebox import CodeBox, CodeBoxError, CodeBoxSettings, LocalBox
from codebox.errors import (
    CodeBoxAuthError,
    CodeBoxConnectionError,
    CodeBoxNotFoundError,
    CodeBoxRateLimitError,
    CodeBoxServerError,
    CodeBoxTimeoutError,
)
from codebox.remote import _transport as cloud
from codebox.remote._requests import RUN_TIMEOUT_MARGIN
from codebox.schema import CodeBoxFile, ExecError, OutputChunk

BASE = "https://api.test/v1"
KEY = "sk-test-123"
ALL_EXTENSIONS = ["rich-run", "stream", "interrupt", "file-sizes"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No CODEBOX_* variable and no .env file leak into a test."""
    for name in list(os.environ):
        if name.startswith("CODEBOX_") and name != "CODEBOX_TEST_RUN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sleeps(monkeypatch):
    """The retry waits, recorded instead of waited."""
    delays: list[float] = []

    async def asleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(cloud, "_sleep", delays.append)
    monkeypatch.setattr(cloud, "_asleep", asleep)
    return delays


@pytest.fixture
def api(sleeps):
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture(params=["sync", "async"])
def flavour(request):
    return request.param


def call(box, flavour, name, *args, **kwargs):
    """``box.name(...)`` or ``asyncio.run(box.aname(...))``."""
    if flavour == "sync":
        return getattr(box, name)(*args, **kwargs)
    return asyncio.run(getattr(box, "a" + name)(*args, **kwargs))


def collect_stream(box, flavour, code, **kwargs):
    if flavour == "sync":
        return list(box.stream(code, **kwargs))

    async def main():
        return [chunk async for chunk in box.astream(code, **kwargs)]

    return asyncio.run(main())


def make_box(max_retries: int = 2, **kwargs) -> CodeBox:
    settings = CodeBoxSettings(max_retries=max_retries)
    return CodeBox(api_key=KEY, base_url=BASE, settings=settings, **kwargs)


def serve(api, extensions=None, session=42):
    """Routes for capabilities (``None``: a core-only server, 404) and start."""
    if extensions is None:
        api.get("/codebox/capabilities").respond(404, json={"detail": "Not Found"})
    else:
        api.get("/codebox/capabilities").respond(
            json={"version": "1.0", "extensions": list(extensions)}
        )
    return api.get("/codebox/start").respond(json={"id": session})


def sent(route, index: int = -1) -> httpx.Request:
    return route.calls[index].request


def body_of(request: httpx.Request):
    return json.loads(request.content)


def assert_auth(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {KEY}"


def ndjson(*items) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


# -- the LocalBox fallback ------------------------------------------------------------


def test_no_key_gives_a_local_box():
    box = CodeBox()
    assert isinstance(box, LocalBox) and type(box) is not CodeBox
    assert isinstance(box, CodeBox)  # what CodeBox() gives counts as one


def test_key_local_and_local_flag_give_a_local_box():
    assert isinstance(CodeBox(api_key="local"), LocalBox)
    assert isinstance(CodeBox(api_key=KEY, local=True), LocalBox)
    assert isinstance(CodeBox(settings=CodeBoxSettings(api_key="local")), LocalBox)


def test_local_box_gets_the_settings():
    box = CodeBox(settings=CodeBoxSettings(kernel_name="python-x"), timeout=12.0)
    assert isinstance(box, LocalBox)
    assert box.settings.kernel_name == "python-x" and box.settings.timeout == 12.0


def test_a_key_from_argument_settings_env_or_dotenv_gives_a_rest_client(monkeypatch, tmp_path):
    assert type(CodeBox(api_key=KEY)) is CodeBox
    assert type(CodeBox(settings=CodeBoxSettings(api_key=KEY))) is CodeBox
    (tmp_path / ".env").write_text(f"CODEBOX_API_KEY={KEY}-dotenv\n")
    assert CodeBox().settings.api_key == f"{KEY}-dotenv"
    monkeypatch.setenv("CODEBOX_API_KEY", f"{KEY}-env")
    box = CodeBox()
    assert type(box) is CodeBox and box.settings.api_key == f"{KEY}-env"


def test_arguments_override_settings():
    box = CodeBox(api_key=KEY, base_url=BASE, timeout=5.0, settings=CodeBoxSettings(api_key="x"))
    assert (box.settings.api_key, box.settings.base_url, box.settings.timeout) == (KEY, BASE, 5.0)


def test_from_id_without_key_asks_local_box(monkeypatch):
    asked = []

    def from_id(session_id):
        asked.append(session_id)
        raise CodeBoxError(f"no LocalBox {session_id}")

    monkeypatch.setattr(LocalBox, "from_id", staticmethod(from_id))
    with pytest.raises(CodeBoxError, match="no LocalBox abc"):
        CodeBox.from_id("abc")
    assert asked == ["abc"]


@pytest.mark.parametrize("value", [42, "42", uuid.UUID(int=42), str(uuid.UUID(int=42))])
def test_from_id_attaches_without_sending(api, value):
    status = api.get("/codebox/42/").respond(json={"status": "running"})
    box = CodeBox.from_id(value, api_key=KEY, base_url=BASE)
    assert type(box) is CodeBox and box.session_id == "42"
    assert box.status() == "running"  # as the box knows it: nothing is asked
    assert not api.calls and not status.called
    assert repr(box) == "<CodeBox id=42 running>"


def test_from_id_rejects_garbage():
    with pytest.raises(ValueError):
        CodeBox.from_id("not-an-id", api_key=KEY)


# -- lifecycle ------------------------------------------------------------------------


def test_start_is_idempotent_and_status_asks_nothing(api, flavour):
    start = serve(api)
    status = api.get("/codebox/42/").respond(json={"status": "running"})
    box = make_box()
    assert call(box, flavour, "status") == "stopped"  # never started: nothing sent
    assert not api.calls
    assert call(box, flavour, "start") == "started"
    assert call(box, flavour, "start") == "started"
    assert start.call_count == 1 and box.session_id == "42"
    request = sent(start)
    assert (request.method, request.url.path, request.content) == ("GET", "/v1/codebox/start", b"")
    assert_auth(request)
    assert call(box, flavour, "status") == "running"
    assert not status.called and len(api.calls) == 1  # the one start, and nothing since


def test_stop_sends_stop_and_a_stopped_box_starts_a_new_session(api, flavour):
    start = api.get("/codebox/start")
    start.side_effect = [httpx.Response(200, json={"id": 1}), httpx.Response(200, json={"id": 2})]
    stop1 = api.post("/codebox/1/stop").respond(json={"status": "stopped"})
    box = make_box()
    assert call(box, flavour, "stop") == "stopped"  # never started: nothing sent
    assert not api.calls
    call(box, flavour, "start")
    assert call(box, flavour, "stop") == "stopped"
    assert call(box, flavour, "stop") == "stopped"
    assert stop1.call_count == 1 and sent(stop1).content == b""
    assert_auth(sent(stop1))
    assert call(box, flavour, "status") == "stopped"
    assert repr(box) == "<CodeBox id=1 stopped>"
    call(box, flavour, "start")
    assert box.session_id == "2"


def test_stop_of_a_session_the_server_forgot_counts_as_stopped(api, flavour):
    api.post("/codebox/42/stop").respond(404, json={"detail": "no such session"})
    box = make_box(session_id=42)
    assert call(box, flavour, "stop") == "stopped"


def test_context_managers_start_stop_and_close_the_clients(api):
    serve(api)
    api.get("/codebox/42/files").respond(json={"files": []})
    stop = api.post("/codebox/42/stop").respond(json={"status": "stopped"})
    with make_box() as box:
        box.list_files()
        client = box._sync_transport.client()
    assert stop.call_count == 1 and client.is_closed

    async def main():
        async with make_box() as abox:
            await abox.alist_files()
            return abox._async_transport.client()

    assert asyncio.run(main()).is_closed
    assert stop.call_count == 2


def test_stop_closes_the_client_even_when_the_server_fails(api):
    api.post("/codebox/42/stop").respond(500, json={"detail": "down"})
    api.get("/codebox/42/files").respond(json={"files": []})
    box = make_box(session_id=42)
    box.list_files()
    client = box._sync_transport.client()
    with pytest.raises(CodeBoxServerError):
        box.stop()
    assert client.is_closed


def test_close_and_aclose_release_the_clients(api):
    serve(api)  # a closed box starts a new session when used again
    api.get("/codebox/42/files").respond(json={"files": []})
    stop = api.post("/codebox/42/stop").respond(json={"status": "stopped"})
    box = make_box(session_id=42)
    box.list_files()

    async def use_then_close():
        await box.alist_files()
        aclient = box._async_transport.client()
        await box.aclose()
        return aclient

    client = box._sync_transport.client()
    assert asyncio.run(use_then_close()).is_closed and client.is_closed
    assert stop.call_count == 1 and box.status() == "stopped"  # close() is stop()
    box.list_files()  # a new client is made when needed
    box.close()
    assert box._sync_transport is None and stop.call_count == 2


def test_sync_stop_closes_the_async_client_too(api):
    api.get("/codebox/42/files").respond(json={"files": []})
    api.post("/codebox/42/stop").respond(json={"status": "stopped"})
    box = make_box(session_id=42)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(box.alist_files())
        aclient = box._async_transport.client()
        assert box.stop() == "stopped"
        assert aclient.is_closed and box._async_transport is None
    finally:
        loop.close()


def test_the_async_client_follows_the_event_loop(api):
    route = api.get("/codebox/42/files").respond(json={"files": ["a"]})
    box = make_box(session_id=42)
    clients = []

    async def use():
        await box.alist_files()
        clients.append(box._async_transport.client())
        await box.alist_files()
        clients.append(box._async_transport.client())

    asyncio.run(use())
    asyncio.run(use())
    assert clients[0] is clients[1] and clients[1] is not clients[2]
    assert clients[2] is clients[3] and route.call_count == 4


# -- run ------------------------------------------------------------------------------


def test_run_on_a_core_server_lazily_starts_and_sends_only_code(api, flavour):
    start = serve(api)
    run = api.post("/codebox/42/run").respond(json={"type": "text", "content": "2\n"})
    box = make_box()
    output = call(box, flavour, "run", "1 + 1", timeout=5.0)
    assert start.call_count == 1
    request = sent(run)
    assert (request.method, request.url.path) == ("POST", "/v1/codebox/42/run")
    assert request.headers["content-type"] == "application/json"
    assert body_of(request) == {"code": "1 + 1"}
    assert_auth(request)
    assert request.extensions["timeout"]["read"] == 5.0 + RUN_TIMEOUT_MARGIN
    assert output.chunks == [OutputChunk(type="text", content="2\n")]
    assert (output.type, output.content) == ("text", "2\n")


def test_run_on_a_rich_server_sends_the_timeout_and_reads_rich_results(api, flavour):
    serve(api, ["rich-run"])
    run = api.post("/codebox/42/run").respond(
        json={
            "type": "image/png",
            "content": "iVBOR",
            "chunks": [
                {"type": "stdout", "content": "before\n"},
                {"type": "image/png", "content": "iVBOR"},
                {"type": "stdout", "content": "after\n"},
            ],
            "stdout": "before\nafter\n",
            "stderr": "",
            "images": ["iVBOR"],
            "error": None,
            "execution_count": 7,
            "truncated": False,
        }
    )
    output = call(make_box(), flavour, "run", "plot()", timeout=2.5)
    assert body_of(sent(run)) == {"code": "plot()", "timeout": 2.5}
    assert sent(run).extensions["timeout"]["read"] == 2.5 + RUN_TIMEOUT_MARGIN
    assert [c.type for c in output.chunks] == ["stdout", "image/png", "stdout"]
    assert (output.stdout, output.images, output.execution_count) == (
        "before\nafter\n",
        ["iVBOR"],
        7,
    )


def test_run_without_timeout_has_no_read_limit_but_others_keep_theirs(api, flavour):
    serve(api)
    run = api.post("/codebox/42/run").respond(json={"type": "text", "content": ""})
    call(make_box(timeout=9.0), flavour, "run", "x = 1")
    assert sent(run).extensions["timeout"] == {
        "connect": 9.0,
        "read": None,
        "write": 9.0,
        "pool": 9.0,
    }


def test_run_uses_the_run_timeout_setting(api, flavour):
    serve(api, ["rich-run"])
    run = api.post("/codebox/42/run").respond(json={"type": "text", "content": ""})
    box = CodeBox(api_key=KEY, base_url=BASE, settings=CodeBoxSettings(run_timeout=3.0))
    call(box, flavour, "run", "x")
    assert body_of(sent(run)) == {"code": "x", "timeout": 3.0}


def test_run_file_path(api, flavour, tmp_path):
    serve(api)
    run = api.post("/codebox/42/run").respond(json={"type": "text", "content": "hi"})
    script = tmp_path / "script.py"
    script.write_text("print('hi')\n", encoding="utf-8")
    assert call(make_box(), flavour, "run", file_path=script) == "hi"
    assert body_of(sent(run)) == {"code": "print('hi')\n"}


def test_run_needs_code_or_file_path_not_both(api, flavour, tmp_path):
    box = make_box()
    with pytest.raises(ValueError):
        call(box, flavour, "run")
    with pytest.raises(ValueError):
        call(box, flavour, "run", "x", file_path=tmp_path / "x.py")
    assert not api.calls


def test_run_core_error_becomes_exec_error(api, flavour):
    serve(api)
    api.post("/codebox/42/run").respond(
        json={"type": "error", "content": "ZeroDivisionError: division by zero"}
    )
    output = call(make_box(), flavour, "run", "1/0")
    assert output.error == ExecError(name="ZeroDivisionError", value="division by zero")
    assert output.type == "error"


def test_capabilities_are_fetched_once_per_box(api, flavour):
    serve(api)
    caps = api.routes[0]
    api.post("/codebox/42/run").respond(json={"type": "text", "content": ""})
    box = make_box()
    for _ in range(3):
        call(box, flavour, "run", "x")
    assert caps.call_count == 1
    assert_auth(sent(caps))
    assert sent(caps).url.path == "/v1/codebox/capabilities"


def test_run_on_output_on_a_core_server_gets_the_chunks_after_the_run(api, flavour):
    serve(api)
    api.post("/codebox/42/run").respond(json={"type": "text", "content": "out"})
    seen = []
    call(make_box(), flavour, "run", "x", on_output=seen.append)
    assert seen == [OutputChunk(type="text", content="out")]


def test_run_on_output_on_a_streaming_server_uses_the_stream(api, flavour):
    serve(api, ALL_EXTENSIONS)
    final = {
        "type": "text",
        "content": "a\nb\n",
        "chunks": [{"type": "stdout", "content": "a\n"}, {"type": "stdout", "content": "b\n"}],
    }
    stream = api.post("/codebox/42/run/stream").respond(
        content=ndjson(
            {"type": "stdout", "content": "a\n"},
            {"type": "stdout", "content": "b\n"},
            {"type": "end", "output": final},
        ),
        headers={"content-type": "application/x-ndjson"},
    )
    plain = api.post("/codebox/42/run")
    seen = []
    output = call(make_box(), flavour, "run", "x", timeout=4.0, on_output=seen.append)
    assert [c.content for c in seen] == ["a\n", "b\n"]
    assert output.content == "a\nb\n" and len(output.chunks) == 2
    assert body_of(sent(stream)) == {"code": "x", "timeout": 4.0}
    assert not plain.called


# -- stream ---------------------------------------------------------------------------


def test_stream_over_ndjson(api, flavour):
    serve(api, ["stream"])
    stream = api.post("/codebox/42/run/stream").respond(
        content=ndjson(
            {"type": "stdout", "content": "1\n"},
            {"type": "image/png", "content": "iVBOR"},
            {"type": "stderr", "content": "w\n"},
            {"type": "end", "output": {"type": "text", "content": "1\n", "chunks": []}},
        ),
        headers={"content-type": "application/x-ndjson"},
    )
    chunks = collect_stream(make_box(), flavour, "work()", timeout=1.5)
    assert [(c.type, c.content) for c in chunks] == [
        ("stdout", "1\n"),
        ("image/png", "iVBOR"),
        ("stderr", "w\n"),
    ]
    request = sent(stream)
    assert (request.method, request.url.path) == ("POST", "/v1/codebox/42/run/stream")
    assert body_of(request) == {"code": "work()", "timeout": 1.5}
    assert_auth(request)


def test_stream_falls_back_to_the_chunks_of_a_plain_run(api, flavour):
    serve(api)
    run = api.post("/codebox/42/run").respond(json={"type": "text", "content": "5"})
    stream = api.post("/codebox/42/run/stream")
    chunks = collect_stream(make_box(), flavour, "5")
    assert chunks == [OutputChunk(type="text", content="5")]
    assert body_of(sent(run)) == {"code": "5"} and not stream.called


def test_stream_that_ends_early_is_a_connection_error(api, flavour):
    serve(api, ["stream"])
    api.post("/codebox/42/run/stream").respond(content=ndjson({"type": "stdout", "content": "x"}))
    with pytest.raises(CodeBoxConnectionError, match="ended before"):
        collect_stream(make_box(), flavour, "x")


def test_stream_error_status_is_mapped(api, flavour):
    serve(api, ["stream"])
    api.post("/codebox/42/run/stream").respond(404, json={"detail": "session gone"})
    with pytest.raises(CodeBoxNotFoundError, match="session gone") as info:
        collect_stream(make_box(), flavour, "x")
    assert info.value.http_status == 404 and info.value.json_body == {"detail": "session gone"}


def test_stream_transport_failure_is_converted(api, flavour):
    serve(api, ["stream"])
    api.post("/codebox/42/run/stream").mock(side_effect=httpx.ReadError("reset"))
    with pytest.raises(CodeBoxConnectionError) as info:
        collect_stream(make_box(), flavour, "x")
    assert isinstance(info.value.__cause__, httpx.ReadError)


def test_leaving_a_stream_early_interrupts_the_run(api, flavour):
    serve(api, ALL_EXTENSIONS)
    api.post("/codebox/42/run/stream").respond(
        content=ndjson({"type": "stdout", "content": "1"}, {"type": "stdout", "content": "2"})
    )
    interrupt = api.post("/codebox/42/interrupt").respond(json={"status": "interrupted"})
    box = make_box()
    if flavour == "sync":
        gen = box.stream("loop()")
        assert next(gen).content == "1"
        gen.close()
    else:

        async def main():
            agen = box.astream("loop()")
            assert (await agen.__anext__()).content == "1"
            await agen.aclose()

        asyncio.run(main())
    assert interrupt.call_count == 1


# -- interrupt, restart, install ------------------------------------------------------


def interrupt_mid_stream(box, flavour):
    """``box.interrupt()`` while a stream of the box is running (after its first chunk)."""
    if flavour == "sync":
        with box.stream("loop()") as stream:
            next(stream)
            return box.interrupt()

    async def main():
        async with box.astream("loop()") as stream:
            await stream.__anext__()
            return await box.ainterrupt()

    return asyncio.run(main())


def serve_endless_stream(api):
    api.post("/codebox/42/run/stream").respond(
        content=ndjson(*[{"type": "stdout", "content": "tick\n"}] * 3))


def test_interrupt_where_offered(api, flavour):
    serve(api, ["interrupt", "stream"])
    serve_endless_stream(api)
    route = api.post("/codebox/42/interrupt").respond(json={"status": "interrupted"})
    box = make_box(session_id=42)
    assert call(box, flavour, "interrupt") == "interrupted"
    assert not route.called  # nothing runs: nothing to interrupt, nothing sent
    assert interrupt_mid_stream(box, flavour) == "interrupted"
    assert (sent(route, 0).method, sent(route, 0).url.path) == (
        "POST", "/v1/codebox/42/interrupt")
    assert_auth(sent(route, 0))


def test_interrupt_on_a_server_without_it_says_so_and_sends_nothing(api, flavour):
    start = serve(api, ["rich-run", "stream"])
    serve_endless_stream(api)
    route = api.post("/codebox/42/interrupt")
    with pytest.raises(CodeBoxError, match="does not support interrupt"):
        interrupt_mid_stream(make_box(session_id=42), flavour)
    assert not route.called and not start.called


def test_interrupt_without_a_session_sends_nothing_and_starts_nothing(api, flavour):
    start = serve(api, ALL_EXTENSIONS)
    box = make_box()
    assert call(box, flavour, "interrupt") == "stopped"
    assert not api.calls and not start.called and box.session_id is None


def test_restart(api, flavour):
    route = api.post("/codebox/42/restart").respond(json={"status": "ok"})
    assert call(make_box(session_id=42), flavour, "restart") == "restarted"
    assert (sent(route).method, sent(route).url.path, sent(route).content) == (
        "POST",
        "/v1/codebox/42/restart",
        b"",
    )
    assert_auth(sent(route))


def test_install_on_a_core_server_one_request_per_package(api, flavour):
    serve(api)
    route = api.post("/codebox/42/install")
    route.side_effect = [
        httpx.Response(200, json={"status": "numpy installed"}),
        httpx.Response(200, json={"status": "pandas installed"}),
    ]
    status = call(make_box(), flavour, "install", "numpy", "pandas")
    assert status == "numpy installed; pandas installed"
    assert [body_of(c.request) for c in route.calls] == [
        {"package_name": "numpy"},
        {"package_name": "pandas"},
    ]
    assert_auth(sent(route))


def test_install_on_an_extended_server_sends_package_names(api, flavour):
    serve(api, ["rich-run"])
    route = api.post("/codebox/42/install").respond(json={"status": "numpy, pandas installed"})
    status = call(make_box(), flavour, "install", "numpy", "pandas", timeout=300.0)
    assert status == "numpy, pandas installed"
    assert body_of(sent(route)) == {
        "package_name": "numpy pandas",
        "package_names": ["numpy", "pandas"],
    }
    assert sent(route).extensions["timeout"]["read"] == 300.0 + RUN_TIMEOUT_MARGIN


def test_install_failure_raises_with_the_servers_message(api, flavour):
    serve(api)
    api.post("/codebox/42/install").respond(
        400, json={"detail": "ERROR: No matching distribution found for nopkg"}
    )
    with pytest.raises(CodeBoxError, match="install of nopkg failed: ERROR: No matching"):
        call(make_box(), flavour, "install", "nopkg")


def test_install_without_names_sends_nothing(api, flavour):
    with pytest.raises(ValueError):
        call(make_box(), flavour, "install")
    assert not api.calls


# -- files ----------------------------------------------------------------------------


def multipart_parts(request: httpx.Request):
    head = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    return list(message.iter_parts())


@pytest.mark.parametrize(
    ("content", "data"), [(b"a,b\n\x00", b"a,b\n\x00"), ("héllo", "héllo".encode())]
)
def test_upload_is_one_multipart_part_named_file(api, flavour, content, data):
    start = serve(api)
    route = api.post("/codebox/42/upload").respond(json={"status": "data/x.csv uploaded"})
    result = call(make_box(), flavour, "upload", "data/x.csv", content)
    assert result == CodeBoxFile(name="data/x.csv", size=len(data)) and result.content is None
    request = sent(route)
    assert (request.method, request.url.path) == ("POST", "/v1/codebox/42/upload")
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert_auth(request)
    (part,) = multipart_parts(request)
    assert part.get_param("name", header="content-disposition") == "file"
    assert part.get_filename() == "data/x.csv"
    assert part.get_payload(decode=True) == data
    assert start.call_count == 1


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.txt", "a\x00b"])
def test_upload_and_download_check_the_name_before_sending(api, flavour, name):
    box = make_box()
    with pytest.raises(CodeBoxError, match="invalid file name"):
        call(box, flavour, "upload", name, b"x")
    with pytest.raises(CodeBoxError, match="invalid file name"):
        call(box, flavour, "download", name)
    assert not api.calls


def test_upload_is_not_retried(api, flavour, sleeps):
    serve(api)
    route = api.post("/codebox/42/upload").respond(503, json={"detail": "busy"})
    with pytest.raises(CodeBoxServerError):
        call(make_box(), flavour, "upload", "x.txt", b"x")
    assert route.call_count == 1 and sleeps == []


def test_download_is_a_get_with_a_json_body_and_a_query(api, flavour):
    route = api.get("/codebox/42/download").respond(
        content=b"\x89PNG\x00",
        headers={
            "content-type": "application/octet-stream",
            "content-disposition": "attachment; filename*=UTF-8''pl%C3%B6t.png",
        },
    )
    result = call(make_box(session_id=42), flavour, "download", "out/plöt.png")
    assert (result.name, result.size, result.content) == ("plöt.png", 5, b"\x89PNG\x00")
    request = sent(route)
    assert (request.method, request.url.path) == ("GET", "/v1/codebox/42/download")
    assert request.url.params["file_name"] == "out/plöt.png"
    assert body_of(request) == {"file_name": "out/plöt.png"}
    assert request.headers["content-type"] == "application/json"
    assert_auth(request)


def test_download_without_content_disposition_keeps_the_requested_name(api, flavour):
    api.get("/codebox/42/download").respond(content=b"abc")
    result = call(make_box(session_id=42), flavour, "download", "data/x.csv")
    assert (result.name, result.content) == ("data/x.csv", b"abc")


def test_download_of_a_missing_file(api, flavour):
    api.get("/codebox/42/download").respond(404, json={"detail": "File not found"})
    with pytest.raises(FileNotFoundError) as info:
        call(make_box(session_id=42), flavour, "download", "nope.txt")
    assert isinstance(info.value, CodeBoxNotFoundError)
    assert "download of 'nope.txt' failed: File not found" in str(info.value)


def test_list_files_sorted_with_names_or_objects(api, flavour):
    start = serve(api)
    route = api.get("/codebox/42/files").respond(
        json={"files": ["z.txt", {"name": "a/b.csv", "size": 10}, "m.py"]}
    )
    files = call(make_box(), flavour, "list_files")
    assert files == [
        CodeBoxFile(name="a/b.csv", size=10),
        CodeBoxFile(name="m.py"),
        CodeBoxFile(name="z.txt"),
    ]
    assert (sent(route).method, sent(route).url.path) == ("GET", "/v1/codebox/42/files")
    assert_auth(sent(route))
    assert start.call_count == 1


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, CodeBoxError),
        (401, CodeBoxAuthError),
        (403, CodeBoxAuthError),
        (404, CodeBoxNotFoundError),
        (413, CodeBoxError),
        (422, CodeBoxError),
        (429, CodeBoxRateLimitError),
        (500, CodeBoxServerError),
        (502, CodeBoxServerError),
        (503, CodeBoxServerError),
        (504, CodeBoxServerError),
    ],
)
def test_every_error_status_raises_with_context(api, flavour, status, cls):
    serve(api)
    api.post("/codebox/42/run").respond(
        status, json={"detail": "the detail"}, headers={"x-request-id": "req-1"}
    )
    with pytest.raises(CodeBoxError) as info:
        call(make_box(max_retries=0), flavour, "run", "x")
    err = info.value
    assert type(err) is cls
    assert err.http_status == status
    assert err.json_body == {"detail": "the detail"}
    assert err.headers["x-request-id"] == "req-1"
    assert "run in session 42 failed: the detail" in str(err)


def test_a_non_json_error_body_is_kept_as_text(api, flavour):
    serve(api)
    api.post("/codebox/42/run").respond(
        502, content=b"<html>Bad Gateway</html>", headers={"content-type": "text/html"}
    )
    with pytest.raises(CodeBoxServerError) as info:
        call(make_box(), flavour, "run", "x")
    assert info.value.json_body == "<html>Bad Gateway</html>"
    assert "Bad Gateway" in str(info.value)


def test_an_error_without_content_type_is_still_parsed(api, flavour):
    api.get("/codebox/42/files").mock(
        return_value=httpx.Response(401, content=b'{"detail": "Invalid API key"}')
    )
    with pytest.raises(CodeBoxAuthError, match="Invalid API key") as info:
        call(make_box(session_id=42), flavour, "list_files")
    assert "content-type" not in info.value.headers
    assert info.value.json_body == {"detail": "Invalid API key"}


def test_a_success_without_content_type_is_parsed(api, flavour):
    api.get("/codebox/42/files").mock(return_value=httpx.Response(200, content=b'{"files": ["a"]}'))
    assert call(make_box(session_id=42), flavour, "list_files") == [CodeBoxFile(name="a")]


def test_a_success_that_is_not_json_is_an_error(api, flavour):
    api.get("/codebox/42/files").respond(200, content=b"<html>login</html>")
    with pytest.raises(CodeBoxError, match="not JSON") as info:
        call(make_box(session_id=42), flavour, "list_files")
    assert info.value.json_body == "<html>login</html>"


def test_a_read_timeout_is_a_timeout_error_and_not_retried(api, flavour, sleeps):
    serve(api)
    route = api.post("/codebox/42/run").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(TimeoutError) as info:
        call(make_box(), flavour, "run", "x")
    assert isinstance(info.value, CodeBoxTimeoutError)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert "run in session 42 timed out" in str(info.value)
    assert route.call_count == 1 and sleeps == []


def test_a_broken_connection_after_sending_is_not_retried(api, flavour, sleeps):
    serve(api)
    route = api.post("/codebox/42/run").mock(side_effect=httpx.RemoteProtocolError("eof"))
    with pytest.raises(CodeBoxConnectionError) as info:
        call(make_box(), flavour, "run", "x")
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert route.call_count == 1 and sleeps == []


def test_an_unusable_base_url_is_a_codebox_error(flavour):
    box = CodeBox(api_key=KEY, base_url="ftp://api.test/v1")
    with pytest.raises(CodeBoxError) as info:
        call(box, flavour, "start")
    assert not isinstance(info.value, CodeBoxConnectionError)
    assert isinstance(info.value.__cause__, httpx.HTTPError)


# -- retries --------------------------------------------------------------------------


def backoff_ok(delays: list[float]) -> bool:
    """Equal jitter over 0.5 s doubling: attempt n waits in [0.25 * 2**n, 0.5 * 2**n]."""
    return all(0.25 * 2**n <= d <= 0.5 * 2**n for n, d in enumerate(delays))


def retryable_ops(api):
    """(name, route, args) of each operation that is retried on 429/502/503/504."""
    return {
        "start": (api.get("/codebox/start"), ()),
        "file_info": (api.get("/codebox/42/files/info"), ("x.txt",)),
        "list_files": (api.get("/codebox/42/files"), ()),
        "download": (api.get("/codebox/42/download"), ("x.txt",)),
    }


OK_REPLIES = {
    "start": {"id": 42},
    "file_info": {"name": "x.txt", "size": 1},
    "list_files": {"files": []},
    "download": None,
}


@pytest.mark.parametrize("op", ["start", "file_info", "list_files", "download"])
@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_safe_operations_are_retried_with_backoff(api, flavour, sleeps, op, status):
    serve(api, ["file-ops"])
    route, args = retryable_ops(api)[op]
    ok = httpx.Response(200, json=OK_REPLIES[op]) if OK_REPLIES[op] else httpx.Response(200)
    route.side_effect = [httpx.Response(status, json={"detail": "busy"})] * 2 + [ok]
    box = make_box(max_retries=2) if op == "start" else make_box(max_retries=2, session_id=42)
    call(box, flavour, op, *args)
    assert route.call_count == 3
    assert len(sleeps) == 2 and backoff_ok(sleeps)
    assert route.calls[0].request.content == route.calls[2].request.content


def test_retries_stop_after_max_retries(api, flavour, sleeps):
    route = api.get("/codebox/42/files").respond(503, json={"detail": "busy"})
    with pytest.raises(CodeBoxServerError, match="busy"):
        call(make_box(max_retries=3, session_id=42), flavour, "list_files")
    assert route.call_count == 4 and len(sleeps) == 3 and backoff_ok(sleeps)


def test_no_retries_when_max_retries_is_zero(api, flavour, sleeps):
    route = api.get("/codebox/start").respond(503)
    with pytest.raises(CodeBoxServerError):
        call(make_box(max_retries=0), flavour, "start")
    assert route.call_count == 1 and sleeps == []


def test_capabilities_are_retried(api, flavour, sleeps):
    caps = api.get("/codebox/capabilities")
    caps.side_effect = [httpx.Response(502), httpx.Response(200, json={"extensions": []})]
    api.post("/codebox/42/run").respond(json={"type": "text", "content": ""})
    call(make_box(session_id=42), flavour, "run", "x")
    assert caps.call_count == 2 and len(sleeps) == 1


def test_retry_after_seconds_and_cap(api, flavour, sleeps):
    route = api.get("/codebox/start")
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow down"}),
        httpx.Response(503, headers={"Retry-After": "86400"}),
        httpx.Response(200, json={"id": 5}),
    ]
    call(make_box(max_retries=2), flavour, "start")
    assert sleeps == [7.0, 60.0]


def test_retry_after_http_date(api, flavour, sleeps):
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    route = api.get("/codebox/42/files")
    route.side_effect = [
        httpx.Response(503, headers={"Retry-After": future}),
        httpx.Response(200, json={"files": []}),
    ]
    call(make_box(session_id=42), flavour, "list_files")
    assert len(sleeps) == 1 and 25.0 <= sleeps[0] <= 30.0


@pytest.mark.parametrize(
    ("op", "method", "path", "args"),
    [
        ("run", "POST", "/codebox/42/run", ("x",)),
        ("install", "POST", "/codebox/42/install", ("numpy",)),
        ("upload", "POST", "/codebox/42/upload", ("x.txt", b"x")),
        ("restart", "POST", "/codebox/42/restart", ()),
        ("stop", "POST", "/codebox/42/stop", ()),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_unsafe_operations_are_never_sent_twice(
    api, flavour, sleeps, op, method, path, args, status
):
    serve(api)
    route = api.request(method, path).respond(status, headers={"Retry-After": "1"})
    with pytest.raises(CodeBoxError) as info:
        call(make_box(session_id=42), flavour, op, *args)
    assert info.value.http_status == status
    assert route.call_count == 1 and sleeps == []


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout])
def test_unsent_requests_are_retried_even_for_run(api, flavour, sleeps, exc):
    serve(api)
    route = api.post("/codebox/42/run")
    route.side_effect = [
        exc("refused"),
        httpx.Response(200, json={"type": "text", "content": "ok"}),
    ]
    assert call(make_box(session_id=42), flavour, "run", "x") == "ok"
    assert route.call_count == 2 and len(sleeps) == 1 and backoff_ok(sleeps)
    assert [body_of(c.request) for c in route.calls] == [{"code": "x"}] * 2


def test_connection_refused_every_time(api, flavour, sleeps):
    route = api.get("/codebox/start").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(CodeBoxConnectionError, match="connection error") as info:
        call(make_box(max_retries=2), flavour, "start")
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert route.call_count == 3 and len(sleeps) == 2 and backoff_ok(sleeps)


def test_connect_timeout_every_time_is_a_timeout_error(api, flavour, sleeps):
    route = api.get("/codebox/start").mock(side_effect=httpx.ConnectTimeout("slow"))
    with pytest.raises(CodeBoxTimeoutError):
        call(make_box(max_retries=1), flavour, "start")
    assert route.call_count == 2 and len(sleeps) == 1
