"""`CodeBox` and the extensions ``start-options``, ``shell`` and ``file-ops`` against a
mocked server (respx): what goes over the wire, and a clear error where a server does not
offer them."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
import respx

from codebox import CodeBox, CodeBoxError, CodeBoxSettings, CommandResult
from codebox.errors import CodeBoxNotFoundError

BASE = "https://api.test/v1"
ALL_EXTENSIONS = ["rich-run", "stream", "interrupt", "file-sizes"]

NEW = ["start-options", "shell", "file-ops"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("CODEBOX_") and name != "CODEBOX_TEST_RUN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def api():
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture(params=["sync", "async"])
def flavour(request):
    return request.param


def call(box, flavour, name, *args, **kwargs):
    if flavour == "sync":
        return getattr(box, name)(*args, **kwargs)
    return asyncio.run(getattr(box, "a" + name)(*args, **kwargs))


def make_box(**kwargs) -> CodeBox:
    return CodeBox(api_key="sk-test", base_url=BASE, settings=CodeBoxSettings(max_retries=0),
                   **kwargs)


def serve(api, extensions):
    """Capabilities (``None``: a core-only server, 404) and ``GET /codebox/start``."""
    if extensions is None:
        api.get("/codebox/capabilities").respond(404, json={"detail": "Not Found"})
    else:
        api.get("/codebox/capabilities").respond(json={"version": "1", "extensions": extensions})
    api.get("/codebox/start").respond(json={"id": 42})


def sent(route) -> httpx.Request:
    return route.calls[-1].request


def body_of(request: httpx.Request):
    return json.loads(request.content)


def ndjson(*items) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)
RESULT = {"exit_code": 1, "stdout": "o\n", "stderr": "", "timed_out": False,
          "chunks": [{"type": "stdout", "content": "o\n"}]}


@pytest.mark.parametrize("extensions", [None, ALL_EXTENSIONS])
def test_a_server_without_the_extensions_gets_a_clear_error_and_no_request(api, flavour,
                                                                           extensions):
    serve(api, extensions)
    shell = api.post("/codebox/42/shell")
    box = make_box()
    with pytest.raises(CodeBoxError, match="does not support shell"):
        call(box, flavour, "shell", "ls")
    with pytest.raises(CodeBoxError, match="does not support shell"):
        call(box, flavour, "shell", "ls", on_output=print)
    for name, *args in [("remove", "a"), ("rename", "a", "b"), ("make_dir", "a"),
                        ("exists", "a"), ("file_info", "a")]:
        with pytest.raises(CodeBoxError, match="does not support file operations"):
            call(box, flavour, name, *args)
    with pytest.raises(CodeBoxError, match="does not support start with env"):
        call(make_box(env={"A": "1"}), flavour, "start")
    assert not shell.called


def test_env_goes_with_the_start(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    start = api.post("/codebox/start").respond(json={"id": 7})
    box = make_box(env={"A": "1"})
    call(box, flavour, "start")
    assert box.session_id == "7" and body_of(sent(start)) == {"env": {"A": "1"}}


def test_shell_sends_the_command_and_reads_the_result(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    route = api.post("/codebox/42/shell").respond(json=RESULT)
    out = call(make_box(), flavour, "shell", ["ls", "-l"], cwd="./d//e", env={"X": "1"},
               timeout=5)
    assert isinstance(out, CommandResult) and (out.exit_code, out.stdout) == (1, "o\n")
    assert body_of(sent(route)) == {"command": ["ls", "-l"], "cwd": "d/e", "env": {"X": "1"},
                                    "timeout": 5.0}


def test_shell_with_on_output_streams(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    api.post("/codebox/42/shell/stream").respond(
        content=ndjson({"type": "stdout", "content": "o\n"}, {"type": "end", "result": RESULT}))
    seen = []
    out = call(make_box(), flavour, "shell", "echo o", on_output=seen.append)
    assert [c.content for c in seen] == ["o\n"] and out.exit_code == 1


def test_a_failing_stream_raises_what_the_plain_route_raises(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    api.post("/codebox/42/shell/stream").respond(content=ndjson(
        {"type": "stdout", "content": "so far"},
        {"type": "end", "error": {"status": 404, "detail": "no directory 'd'"}}))
    with pytest.raises(CodeBoxNotFoundError) as info:
        call(make_box(), flavour, "shell", "ls", cwd="d", on_output=lambda c: None)
    assert [c.content for c in info.value.chunks] == ["so far"]


def test_file_operations_go_to_their_routes(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    entry = {"name": "b/c", "size": None, "is_dir": True, "modified": "2026-12-01T10:00:00Z"}
    remove = api.post("/codebox/42/files/remove").respond(json={"status": "a removed"})
    rename = api.post("/codebox/42/files/rename").respond(json=entry)
    api.post("/codebox/42/files/mkdir").respond(json=entry)
    api.get("/codebox/42/files/info", params={"path": "b/c"}).respond(json=entry)
    api.get("/codebox/42/files/info", params={"path": "gone"}).respond(
        404, json={"detail": "no file"})
    api.get("/codebox/42/").respond(json={"status": "running"})
    box = make_box()
    assert call(box, flavour, "remove", "a") == "a removed"
    assert body_of(sent(remove)) == {"path": "a"}
    moved = call(box, flavour, "rename", "a", "b/c")
    assert moved.is_dir and moved.modified.year == 2026
    assert body_of(sent(rename)) == {"source": "a", "destination": "b/c"}
    assert call(box, flavour, "make_dir", "b/c").name == "b/c"
    assert call(box, flavour, "file_info", "b/c").is_dir
    assert call(box, flavour, "exists", "b/c") is True
    assert call(box, flavour, "exists", "gone") is False
    with pytest.raises(CodeBoxNotFoundError):
        call(box, flavour, "file_info", "gone")


def test_exists_in_a_session_the_server_does_not_know_is_an_error(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    api.get("/codebox/42/files/info").respond(404, json={"detail": "no such session"})
    api.get("/codebox/42/").respond(404, json={"detail": "no such session"})
    with pytest.raises(CodeBoxNotFoundError, match="no such session"):
        call(make_box(), flavour, "exists", "a")


def test_transfers_report_progress(api, flavour):
    serve(api, ALL_EXTENSIONS + NEW)
    api.post("/codebox/42/upload").respond(json={"status": "big.bin uploaded"})
    api.get("/codebox/42/download").respond(content=b"x" * 300_000)
    ups, downs = [], []
    box = make_box()
    call(box, flavour, "upload", "big.bin", b"y" * 300_000,
         on_progress=lambda done, total: ups.append((done, total)))
    got = call(box, flavour, "download", "big.bin",
               on_progress=lambda done, total: downs.append((done, total)))
    assert got.content == b"x" * 300_000
    for seen in (ups, downs):
        assert seen[0] == (0, 300_000) and seen[-1] == (300_000, 300_000), seen
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
