"""Every limit answers with its own status and a clear ``detail``: sessions per key (429),
upload size (413, nothing left on disk), run timeout, idle sessions (culled, kernels
deleted), malformed requests (422)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.helpers import alive as _alive
from tests.helpers import kernel_host_pid, wait_until
from tests.server.harness import KEY, OTHER_KEY, running_server

pytestmark = pytest.mark.integration

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    env = {
        "CODEBOX_SERVER_API_KEYS": f"{KEY},{OTHER_KEY}",
        "CODEBOX_SERVER_MAX_SESSIONS_PER_KEY": "2",
        "CODEBOX_SERVER_MAX_UPLOAD_SIZE": str(LIMIT),
        "CODEBOX_SERVER_RUN_TIMEOUT": "2",
        "CODEBOX_SERVER_DATA_DIR": str(data_dir),
    }
    with running_server(tmp_path_factory, env=env) as srv:
        yield srv


def _start(client):
    response = client.get("/codebox/start")
    assert response.status_code in (200, 429), response.text
    return response


def test_sessions_per_key(server, api):
    first, second = _start(api).json()["id"], _start(api).json()["id"]
    r = _start(api)
    assert r.status_code == 429 and "2 sessions" in r.json()["detail"]
    with server.client(OTHER_KEY) as other:  # the limit is per key
        sid = _start(other).json()["id"]
        other.post(f"/codebox/{sid}/stop").raise_for_status()
    api.post(f"/codebox/{first}/stop").raise_for_status()
    third = _start(api)
    assert third.status_code == 200
    for sid in (second, third.json()["id"]):
        api.post(f"/codebox/{sid}/stop")


def _multipart(name: str, size: int, boundary: str = "codebox-test-boundary"):
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():  # no Content-Length: sent chunked
        yield head
        left = size
        while left:
            step = min(left, 256 * 1024)
            yield b"z" * step
            left -= step
        yield tail

    return body(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _nothing_left(api, data_dir, sid):
    assert os.listdir(data_dir / "uploads") == []
    # A sandboxed session keeps its files in its kernel's own directory, not in data_dir.
    assert not (data_dir / "sessions" / str(sid)).exists()
    assert api.get(f"/codebox/{sid}/files").json() == {"files": []}


def test_upload_size_limit_leaves_nothing_on_disk(api, session, data_dir):
    assert api.post(f"/codebox/{session}/upload",
                    files={"file": ("full.bin", b"a" * LIMIT)}).status_code == 200
    api.post(f"/codebox/{session}/run",
             json={"code": "import os; os.remove('full.bin')"}).raise_for_status()
    # Declared too large: refused before the body is read.
    r = api.post(f"/codebox/{session}/upload", files={"file": ("big.bin", b"b" * (LIMIT + 1))})
    assert r.status_code == 413 and str(LIMIT) in r.json()["detail"]
    _nothing_left(api, data_dir, session)
    # No declared size: refused once the file grows past the limit, mid-transfer.
    body, headers = _multipart("big.bin", 8 * LIMIT)
    r = api.post(f"/codebox/{session}/upload", content=body, headers=headers)
    assert r.status_code == 413
    _nothing_left(api, data_dir, session)
    assert api.get(f"/codebox/{session}/files").json() == {"files": []}
    # The same connection-less path for a file within the limit works.
    body, headers = _multipart("ok.bin", 1000)
    r = api.post(f"/codebox/{session}/upload", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"status": "ok.bin uploaded", "name": "ok.bin",
                                                 "size": 1000}


def test_run_timeout_is_the_most_a_run_may_take(api, session):
    api.post(f"/codebox/{session}/run", json={"code": "kept = 1"}).raise_for_status()
    for asked in (None, 100):
        body = {"code": "print('spin', flush=True)\nwhile True: pass"}
        if asked:
            body["timeout"] = asked
        out = api.post(f"/codebox/{session}/run", json=body).json()
        assert out["error"]["name"] == "TimeoutError" and "2 s" in out["error"]["value"]
        assert out["stdout"] == "spin\n"
    out = api.post(f"/codebox/{session}/run", json={"code": "kept", "timeout": 1}).json()
    assert out["content"] == "1"


@pytest.mark.parametrize("method, suffix, kwargs", [
    ("POST", "/run", {"json": {}}),
    ("POST", "/run", {"json": {"code": 12}}),
    ("POST", "/run", {"json": {"code": "1", "timeout": 0}}),
    ("POST", "/run", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("POST", "/run/stream", {"json": {"code": None}}),
    ("POST", "/install", {"json": {}}),
    ("POST", "/install", {"json": {"package_names": ["--index-url=http://example.invalid"]}}),
    ("GET", "/download", {"params": {"file_name": "/etc/passwd"}}),
    ("GET", "/download", {"params": {"file_name": "../x"}}),
    ("GET", "/download", {"json": {"file_name": "a\x00b"}}),
    ("POST", "/upload", {"json": {"file": "x"}}),
    ("POST", "/upload", {"files": {"other": ("a.txt", b"x")}}),
    ("POST", "/upload", {"files": {"file": ("../a.txt", b"x")}}),
    ("POST", "/upload", {"files": {"file": ("/abs.txt", b"x")}}),
])
def test_malformed_requests_are_422(api, session, method, suffix, kwargs):
    r = api.request(method, f"/codebox/{session}{suffix}", **kwargs)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert api.get(f"/codebox/{session}/files").json() == {"files": []}


def test_a_download_that_names_no_file_finds_none(api, session):
    # A 404, not a 422: the document cannot require the query or the body, one of two.
    r = api.get(f"/codebox/{session}/download")
    assert r.status_code == 404 and "no file named" in r.json()["detail"]


def test_idle_sessions_are_culled_and_their_kernels_deleted(tmp_path_factory):
    env = {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_IDLE_TIMEOUT": "1.5"}
    with running_server(tmp_path_factory, env=env) as srv, srv.client(KEY) as api:
        busy = _start(api).json()["id"]
        # A run longer than the idle timeout keeps its session.
        kernel = kernel_host_pid(lambda code: api.post(f"/codebox/{busy}/run",
                                                      json={"code": code}).json()["content"])
        out = api.post(f"/codebox/{busy}/run", json={"code": "import time\ntime.sleep(3)"})
        assert out.json()["error"] is None
        wait_until(lambda: api.get(f"/codebox/{busy}/").status_code == 404, timeout=30)
        wait_until(lambda: not _alive(kernel), timeout=30)
        assert api.post(f"/codebox/{busy}/run", json={"code": "1"}).status_code == 404


def test_http_client_sees_413_before_sending_everything(server, session):
    # A plain client with an over-large declared body gets the answer, not a broken pipe.
    with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"}) as client:
        r = client.post(f"/codebox/{session}/upload",
                        files={"file": ("huge.bin", b"h" * (20 * LIMIT))})
    assert r.status_code == 413
