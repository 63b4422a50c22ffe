"""The wire format of the extensions ``start-options``, ``shell`` and ``file-ops``: what
the routes answer, 4xx for bad input, and a failing command stream ending in an error."""

from __future__ import annotations

import json

import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_start_options_set_env_in_the_kernel(api):
    r = api.post("/codebox/start", json={"env": {"FROM_START": "yes"}})
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    try:
        out = api.post(f"/codebox/{sid}/shell", json={"command": "echo $FROM_START"}).json()
        assert out["stdout"] == "yes\n"
    finally:
        api.post(f"/codebox/{sid}/stop")
    for bad in [{"env": {"A=B": "x"}}, {"env": {"A": 1}}, {"env": "A=B"}]:
        assert api.post("/codebox/start", json=bad).status_code == 422


def test_shell_answers_the_command_result(api, session):
    r = api.post(f"/codebox/{session}/shell",
                 json={"command": ["sh", "-c", 'echo "$X"; echo e >&2; exit 4'],
                       "env": {"X": "x"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"exit_code": 4, "stdout": "x\n", "stderr": "e\n", "timed_out": False,
                        "truncated": False,
                        "chunks": [{"type": "stdout", "content": "x\n", "data": None,
                                    "display_id": None},
                                   {"type": "stderr", "content": "e\n", "data": None,
                                    "display_id": None}]}


def test_the_server_run_timeout_bounds_a_command(api, session):
    # The server's run timeout is 3 s: a command asking for more still ends then.
    r = api.post(f"/codebox/{session}/shell",
                 json={"command": "echo $$; sleep 60", "timeout": 100}, timeout=30)
    body = r.json()
    assert body["timed_out"] is True and body["exit_code"] < 0
    pid = int(body["stdout"].split()[0])

    def alive() -> bool:  # as the session sees it: a sandbox has a pid namespace of its own
        code = f"import os\nprint(os.path.exists('/proc/{pid}'))"
        return api.post(f"/codebox/{session}/run", json={"code": code}).json()["content"] \
            == "True\n"

    wait_until(lambda: not alive(), timeout=10)


def test_shell_stream_is_ndjson_chunks_then_the_result(api, session):
    command = {"command": "echo a; sleep 0.2; echo b >&2"}
    with api.stream("POST", f"/codebox/{session}/shell/stream", json=command) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[:-1] == [{"type": "stdout", "content": "a\n"},
                          {"type": "stderr", "content": "b\n"}]
    assert lines[-1]["type"] == "end" and lines[-1]["result"]["exit_code"] == 0
    assert lines[-1]["result"]["stderr"] == "b\n"


def test_a_failing_command_stream_ends_with_the_error(api, session):
    body = {"command": "true", "cwd": "no/such/dir"}
    assert api.post(f"/codebox/{session}/shell", json=body).status_code == 404
    with api.stream("POST", f"/codebox/{session}/shell/stream", json=body) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) == 1 and lines[0]["type"] == "end"
    assert lines[0]["error"]["status"] == 404 and "no/such/dir" in lines[0]["error"]["detail"]


@pytest.mark.parametrize("body", [
    {},
    {"command": ""},
    {"command": []},
    {"command": ["echo", 1]},
    {"command": "echo \u0000"},
    {"command": "true", "timeout": 0},
    {"command": "true", "timeout": "NaN"},
    {"command": "true", "cwd": "/etc"},
    {"command": "true", "cwd": "../up"},
    {"command": "true", "env": {"A=B": "x"}},
])
def test_bad_shell_input_is_a_422(api, session, body):
    for route in ("shell", "shell/stream"):
        r = api.post(f"/codebox/{session}/{route}", json=body)
        assert r.status_code == 422, (route, r.text)
        assert "detail" in r.json()


def test_file_routes(api, session):
    made = api.post(f"/codebox/{session}/files/mkdir", json={"path": "a/b"})
    assert made.status_code == 200
    assert {k: made.json()[k] for k in ("name", "size", "is_dir")} == {
        "name": "a/b", "size": None, "is_dir": True}
    api.post(f"/codebox/{session}/upload", files={"file": ("a/f.txt", b"abc")})
    info = api.get(f"/codebox/{session}/files/info", params={"path": "a/f.txt"}).json()
    assert (info["name"], info["size"], info["is_dir"]) == ("a/f.txt", 3, False)
    assert info["modified"].startswith("20") and "T" in info["modified"]
    moved = api.post(f"/codebox/{session}/files/rename",
                     json={"source": "a/f.txt", "destination": "c/g.txt"}).json()
    assert (moved["name"], moved["size"]) == ("c/g.txt", 3)
    assert api.post(f"/codebox/{session}/files/remove", json={"path": "a"}).json() == {
        "status": "a removed"}
    assert api.get(f"/codebox/{session}/files/info", params={"path": "a"}).status_code == 404
    assert api.post(f"/codebox/{session}/files/remove", json={"path": "a"}).status_code == 404


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "nul\u0000", "", "."])
def test_bad_paths_are_a_422_on_every_file_route(api, session, bad):
    answers = [
        api.post(f"/codebox/{session}/files/remove", json={"path": bad}),
        api.post(f"/codebox/{session}/files/mkdir", json={"path": bad}),
        api.get(f"/codebox/{session}/files/info", params={"path": bad}),
        api.post(f"/codebox/{session}/files/rename", json={"source": bad, "destination": "x"}),
        api.post(f"/codebox/{session}/files/rename", json={"source": "x", "destination": bad}),
    ]
    assert [r.status_code for r in answers] == [422] * 5
