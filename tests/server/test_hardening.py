"""Bad input is a 4xx with an `Error` body, never a 500; bodies are capped before they are
read; slow clients are dropped without disturbing others; a killed server's files are
removed by the next one."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import time

import httpx
import pytest

from tests.helpers import wait_until
from tests.server.harness import KEY, ServerProcess, running_server

pytestmark = pytest.mark.integration

CAP = 1024 * 1024
CLIENT_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "CODEBOX_SERVER_API_KEYS": KEY,
        "CODEBOX_SERVER_MAX_REQUEST_SIZE": str(CAP),
        "CODEBOX_SERVER_MAX_UPLOAD_SIZE": str(CAP),
        "CODEBOX_SERVER_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT),
    }
    with running_server(tmp_path_factory, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def session(server):
    with server.client(KEY) as api:
        sid = api.get("/codebox/start").json()["id"]
        yield sid
        api.post(f"/codebox/{sid}/stop")


def _address(server):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _raw(server, head: bytes, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(_address(server), timeout=10)
    sock.sendall(head + body)
    return sock


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} /api/v1{path} HTTP/1.1", "Host: codebox",
             f"Authorization: Bearer {KEY}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on ``sock``: its status and body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def _is_error_body(body: bytes) -> bool:
    detail = json.loads(body)["detail"]
    return isinstance(detail, str) or all({"loc", "msg", "type"} <= set(d) for d in detail)


@pytest.mark.parametrize("path, content_type, body", [
    ("/run", "application/json", b'{"code": "1", "timeout": NaN}'),
    ("/run", "application/json", b'{"code": "\\ud800"}'),
    ("/run/stream", "application/json", b'{"code": "x = \\udfff"}'),
    ("/install", "application/json", b'{"package_names": ["\\ud800"]}'),
    ("/upload", "multipart/form-data; boundary=x", b"garbage\r\n--x--\r\n"),
    ("/upload", "multipart/form-data; boundary=x",
     (b'--x\r\nContent-Disposition: form-data; name="file"; filename="' + b"a" * 20000
      + b'"\r\n\r\nhi\r\n--x--\r\n')),
    ("/upload", "multipart/form-data; boundary=x",
     (b'--x\r\nContent-Disposition: form-data; name="file"; filename="bell\x07"\r\n\r\n'
      b"hi\r\n--x--\r\n")),
])
def test_bad_input_is_a_4xx_with_an_error_body_and_the_connection_lives_on(
        server, session, path, content_type, body):
    head = _head("POST", f"/codebox/{session}{path}",
                 {"Content-Type": content_type, "Content-Length": str(len(body))})
    with _raw(server, head, body) as sock:
        status, answer = _response(sock)
        assert 400 <= status < 500 and _is_error_body(answer), (status, answer)
        # The next request on the same connection is served.
        sock.sendall(_head("GET", f"/codebox/{session}/", {}))
        assert _response(sock)[0] == 200


@pytest.mark.parametrize("params", [{"file_name": ""}, {"file_name": "a\u202etxt"},
                                    {"file_name": "n" * 256}])
def test_bad_file_names_are_422(server, session, params):
    with server.client(KEY) as api:
        r = api.get(f"/codebox/{session}/download", params=params)
    assert r.status_code == 422 and _is_error_body(r.content), r.text


def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(server, session):
    head = _head("POST", f"/codebox/{session}/run",
                 {"Content-Type": "application/json", "Content-Length": str(50 * CAP)})
    with _raw(server, head) as sock:  # not one byte of the body
        status, answer = _response(sock)
    assert status == 413 and str(CAP) in json.loads(answer)["detail"]


def test_a_chunked_body_is_cut_off_at_the_cap(server, session):
    def chunks():
        yield b'{"code": "'
        for _ in range(64):  # 4 MiB, four times the cap
            yield b"#" * 65536
        yield b'"}'

    with server.client(KEY) as api:
        r = api.post(f"/codebox/{session}/run", content=chunks(),
                     headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert api.post(f"/codebox/{session}/run", json={"code": "'#' * 3"}).json()[
            "content"] == "'###'"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_memory_returns_to_its_baseline_after_large_bodies(server, session):
    def big_body(_):
        payload = b'{"code": "' + b"#" * (20 * CAP) + b'"}'
        with server.client(KEY) as api:
            # Streamed, without a Content-Length: the server must count.
            return api.post(f"/codebox/{session}/run", content=iter([payload]),
                            headers={"Content-Type": "application/json"}).status_code

    before = _rss(server.proc.pid)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(big_body, range(8))) == {413}
    after = _rss(server.proc.pid)
    assert after - before < 16 * CAP, (before, after)


def test_stalled_clients_are_dropped_and_others_are_served(server, session):
    half_head = _head("GET", f"/codebox/{session}/", {})[:-10]
    body_head = _head("POST", f"/codebox/{session}/run",
                      {"Content-Type": "application/json", "Content-Length": "100"})
    stalled = [_raw(server, half_head) for _ in range(5)]
    stalled += [_raw(server, body_head, b'{"code": "1') for _ in range(5)]
    upload = _head("POST", f"/codebox/{session}/upload",
                   {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "500"})
    stalled.append(_raw(server, upload, b"--x\r\n"))
    try:
        started = time.monotonic()
        with server.client(KEY) as api:
            assert api.post(f"/codebox/{session}/run", json={"code": "6 * 7"}).json()[
                "content"] == "42"

        def dropped(sock: socket.socket) -> bool:
            sock.settimeout(CLIENT_TIMEOUT + 10)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data == b"" or data.startswith(b"HTTP/1.1 408")

        assert all(dropped(sock) for sock in stalled)
        assert time.monotonic() - started < CLIENT_TIMEOUT + 8
    finally:
        for sock in stalled:
            sock.close()


def test_the_next_server_removes_what_a_killed_one_left(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tmp")
    # Plain kernels: what is reaped is the server's directory, whatever runs the kernels.
    env = {"CODEBOX_SERVER_API_KEYS": KEY, "TMPDIR": str(tmp), "CODEBOX_SERVER_SANDBOX": "false"}
    live = tmp / "codebox-server-live"  # another server's, which runs: this process
    live.mkdir()
    (live / "owner.pid").write_text(f"{os.getpid()}\n")
    unmarked = tmp / "codebox-server-unmarked"
    unmarked.mkdir()
    killed = ServerProcess(env=env, log_dir=tmp_path_factory.mktemp("server"))
    try:
        with killed.client(KEY) as api:
            started = api.get("/codebox/start")
            assert started.status_code == 200, (started.text, killed.log())
            sid = started.json()["id"]
            api.post(f"/codebox/{sid}/upload", files={"file": ("tenant.txt", b"private")})
        (left,) = (p for p in tmp.glob("codebox-server-*") if p not in (live, unmarked))
        assert list(left.rglob("tenant.txt"))
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(10)
        wait_until(lambda: not killed.leftovers(), timeout=30)
    finally:
        killed.kill()
    with running_server(tmp_path_factory, env=env):
        assert not left.exists()
        assert live.exists() and unmarked.exists()


def test_the_openapi_document_describes_every_error(server):
    document = httpx.get(f"{server.url}/openapi.json", trust_env=False).json()
    for path, operations in document["paths"].items():
        if path.startswith("/api/v1"):
            for operation in operations.values():
                for status in ("401", "404", "408", "413", "422"):
                    ref = operation["responses"][status]["content"]["application/json"]
                    assert ref["schema"] == {"$ref": "#/components/schemas/Error"}


def test_a_sessions_kernel_deleted_on_the_gateway_is_reported_once_and_replaced(
        tmp_path_factory):
    from codebox import CodeBoxSettings
    from codebox.local._gateway import shared_gateway

    address = shared_gateway.acquire(CodeBoxSettings())
    try:
        env = {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_GATEWAY_URL": address.url,
               "CODEBOX_SERVER_GATEWAY_TOKEN": address.token or ""}
        gateway = httpx.Client(base_url=address.url, trust_env=False,
                               headers={"Authorization": f"token {address.token}"})
        with running_server(tmp_path_factory, env=env) as srv, srv.client(KEY) as api, gateway:
            sid = api.get("/codebox/start").json()["id"]
            for route in ("run", "restart"):
                kernel = api.post(f"/codebox/{sid}/run", json={"code": (
                    "state = 1\nimport os\n"
                    "os.path.basename(get_ipython().config['IPKernelApp']['connection_file'])"
                )}).json()["content"].strip("'").removeprefix("kernel-").removesuffix(".json")
                assert gateway.delete(f"/api/kernels/{kernel}").status_code == 204
                started = time.monotonic()
                if route == "run":
                    out = api.post(f"/codebox/{sid}/run", json={"code": "1"}).json()
                    assert out["error"]["name"] == "KernelDiedError", out
                else:
                    assert api.post(f"/codebox/{sid}/restart").status_code == 200
                assert time.monotonic() - started < 30
                out = api.post(f"/codebox/{sid}/run", json={"code": "'state' in dir()"}).json()
                assert out["content"] == "False", out
            api.post(f"/codebox/{sid}/stop")
    finally:
        shared_gateway.release()
