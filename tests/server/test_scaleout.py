"""`codebox serve --gateway-url ... --data-dir ...` on a real Enterprise Gateway: sessions
survive a restart of the server, two servers on one data directory serve the same sessions
(one per-key limit, one culling), and a session whose kernel vanished gets a fresh one."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from codebox import CodeBoxSettings, LocalBox
from codebox.errors import CodeBoxAuthError
from tests.gateways import running_gateway
from tests.helpers import wait_until
from tests.server.harness import KEY, ServerProcess, running_server

KERNEL_USER = "codebox-tests"


@pytest.fixture(scope="module")
def enterprise_gateway(tmp_path_factory):
    with running_gateway("enterprise-gateway", tmp_path_factory.mktemp("eg")) as eg:
        yield eg


@pytest.fixture()
def gateway(enterprise_gateway):
    """The Enterprise Gateway, without kernels at the start of each test (whatever a failed
    test before left)."""
    with enterprise_gateway.client() as client:
        for kernel in enterprise_gateway.kernel_ids():
            client.delete(f"/api/kernels/{kernel}")
    return enterprise_gateway


def _args(gateway, data_dir) -> tuple[str, ...]:
    return ("--gateway-url", gateway.url, "--data-dir", str(data_dir))


def _env(gateway, **settings: str) -> dict[str, str]:
    return {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_GATEWAY_TOKEN": gateway.token,
            "CODEBOX_KERNEL_USERNAME": KERNEL_USER, **settings}


def _run(api, sid: int, code: str) -> dict:
    response = api.post(f"/codebox/{sid}/run", json={"code": code})
    assert response.status_code == 200, response.text
    return response.json()


def test_sessions_survive_a_restart_of_the_server(gateway, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    args = _args(gateway, data_dir)
    with running_server(tmp_path_factory, *args, env=_env(gateway)) as srv, \
            srv.client(KEY) as api:
        sid = api.get("/codebox/start").json()["id"]
        assert _run(api, sid, "x = 41")["error"] is None
        assert api.post(f"/codebox/{sid}/upload",
                        files={"file": ("kept.txt", b"still here")}).status_code == 200
    # The server stopped cleanly and left its session's kernel running on the gateway.
    (kernel,) = gateway.kernel_ids()
    with running_server(tmp_path_factory, *args, env=_env(gateway)) as srv, \
            srv.client(KEY) as api:
        assert api.get(f"/codebox/{sid}/").json()["status"] == "running"
        assert _run(api, sid, "x + 1")["content"] == "42"
        assert api.get(f"/codebox/{sid}/download",
                       params={"file_name": "kept.txt"}).content == b"still here"
        assert gateway.kernel_ids() == [kernel]
        assert api.post(f"/codebox/{sid}/stop").status_code == 200
        assert api.get(f"/codebox/{sid}/").status_code == 404
    assert gateway.kernel_ids() == []


def test_two_servers_on_one_data_dir_serve_the_same_sessions(gateway, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    env = _env(gateway, CODEBOX_SERVER_MAX_SESSIONS_PER_KEY="3",
               CODEBOX_SERVER_IDLE_TIMEOUT="5")
    with running_server(tmp_path_factory, *_args(gateway, data_dir), env=env) as one, \
            running_server(tmp_path_factory, *_args(gateway, data_dir), env=env) as two, \
            one.client(KEY) as api_one, two.client(KEY) as api_two:
        # One limit for both: of six starts at once, three succeed.
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            starts = list(pool.map(lambda api: api.get("/codebox/start"),
                                   [api_one, api_two] * 3))
        assert sorted(r.status_code for r in starts) == [200] * 3 + [429] * 3
        sids = [r.json()["id"] for r in starts if r.status_code == 200]
        assert len(gateway.kernel_ids()) == 3

        # A session started on either server is served by both, on its one kernel.
        first = sids[0]
        assert _run(api_one, first, "y = 'shared'")["error"] is None
        assert _run(api_two, first, "y")["content"] == "'shared'"

        # Stopped on one server, it is gone on the other, and both count one session less.
        assert api_two.post(f"/codebox/{sids[1]}/stop").status_code == 200
        assert api_one.post(f"/codebox/{sids[1]}/run", json={"code": "1"}).status_code == 404
        for server in (one, two):
            assert httpx.get(f"{server.url}/health", trust_env=False).json()["sessions"] == 2

        # Kept in use on one server only, a session outlives the idle timeout on both...
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            assert _run(api_one, first, "1")["error"] is None
            time.sleep(0.5)  # a client that comes back now and then, not a busy loop
        assert _run(api_two, first, "y")["content"] == "'shared'"
        # ...and once idle, one of them stops it and deletes its kernel.
        wait_until(lambda: api_two.get(f"/codebox/{first}/").status_code == 404, timeout=30)
        wait_until(lambda: gateway.kernel_ids() == [], timeout=30)
        assert api_one.post(f"/codebox/{first}/run", json={"code": "1"}).status_code == 404
    for server in (one, two):
        assert "Traceback" not in server.log()


def test_a_session_whose_kernel_vanished_reports_it_once(gateway, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    args = _args(gateway, data_dir)
    with running_server(tmp_path_factory, *args, env=_env(gateway)) as srv, \
            srv.client(KEY) as api:
        sid = api.get("/codebox/start").json()["id"]
        assert _run(api, sid, "z = 1")["error"] is None
        (kernel,) = gateway.kernel_ids()
        with gateway.client() as eg:
            assert eg.delete(f"/api/kernels/{kernel}").status_code == 204
        time.sleep(6)  # the server looks a kernel up after 5 s of quiet (sessions.VERIFY_AFTER)
        lost = _run(api, sid, "1 + 1")
        assert lost["error"]["name"] == "KernelDiedError"
        assert "lost its kernel" in lost["error"]["value"]
        assert _run(api, sid, "'z' in dir()")["content"] == "False"
        assert _run(api, sid, "1 + 1")["content"] == "2"
        (fresh,) = gateway.kernel_ids()
        assert fresh != kernel
    # The store follows the fresh kernel: a new server finds it.
    server = ServerProcess(*args, env=_env(gateway), log_dir=tmp_path_factory.mktemp("log"))
    try:
        with server.client(KEY) as api:
            assert _run(api, sid, "z = 2; z")["content"] == "2"
            assert gateway.kernel_ids() == [fresh]
            api.post(f"/codebox/{sid}/stop")
    finally:
        server.stop()
    assert gateway.kernel_ids() == []


def test_kernels_start_for_kernel_username_with_the_deployments_variables(gateway):
    settings = CodeBoxSettings(kernel_username=KERNEL_USER,
                               kernel_env={"KERNEL_CODEBOX_PROBE": "on"})
    with LocalBox(gateway_url=gateway.url, gateway_token=gateway.token,
                  settings=settings) as box:
        got = box.run("import os\nos.environ['KERNEL_USERNAME'], "
                      "os.environ['KERNEL_CODEBOX_PROBE']").content
        assert got == f"('{KERNEL_USER}', 'on')"
    # A box's env (a client's, through codebox serve) reaches the kernel, but never picks
    # its KERNEL_* settings: the gateway sees the configured user, not the box's "root".
    with LocalBox(gateway_url=gateway.url, gateway_token=gateway.token, settings=settings,
                  env={"KERNEL_USERNAME": "root", "CODEBOX_PROBE": "box"}) as box:
        assert box.run("import os\nos.environ['CODEBOX_PROBE']").content == "'box'"
    # Enterprise Gateway refuses root by default, and codebox says so.
    refused = LocalBox(gateway_url=gateway.url, gateway_token=gateway.token,
                       settings=CodeBoxSettings(kernel_username="root"))
    with pytest.raises(CodeBoxAuthError, match="root"):
        refused.start()
    refused.stop()
    assert gateway.kernel_ids() == []
