"""`codebox serve --gateway-url ...` with a shared store (``--data-dir``: SQLite; ``--store``:
a real PostgreSQL) on a real Enterprise Gateway: sessions and their lifetimes survive a
restart of the server, two servers on one store serve the same sessions (one per-key limit,
one culling), a session whose kernel vanished gets a fresh one, and each key can have a
kernel user of its own."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from codebox import CodeBoxSettings, LocalBox
from codebox.errors import CodeBoxAuthError
from tests.gateways import running_gateway
from tests.helpers import wait_until
from tests.server.harness import KEY, OTHER_KEY, ServerProcess, running_server

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


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request, tmp_path_factory):
    """Makes the arguments of servers that share their sessions: one data directory
    (SQLite), or one PostgreSQL database."""
    if request.param == "sqlite":
        data_dir = tmp_path_factory.mktemp("data")
        return lambda gateway: _args(gateway, data_dir)
    url = request.getfixturevalue("postgres_url")
    return lambda gateway: ("--gateway-url", gateway.url, "--store", url)


def _env(gateway, **settings: str) -> dict[str, str]:
    return {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_GATEWAY_TOKEN": gateway.token,
            "CODEBOX_KERNEL_USERNAME": KERNEL_USER, **settings}


def _run(api, sid: int, code: str) -> dict:
    response = api.post(f"/codebox/{sid}/run", json={"code": code})
    assert response.status_code == 200, response.text
    return response.json()


def test_sessions_survive_a_restart_of_the_server(gateway, shared, tmp_path_factory):
    args = shared(gateway)
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


def test_two_servers_on_one_store_serve_the_same_sessions(gateway, shared, tmp_path_factory):
    env = _env(gateway, CODEBOX_SERVER_MAX_SESSIONS_PER_KEY="3",
               CODEBOX_SERVER_IDLE_TIMEOUT="5")
    with running_server(tmp_path_factory, *shared(gateway), env=env) as one, \
            running_server(tmp_path_factory, *shared(gateway), env=env) as two, \
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
    # Its boxes ask the gateway about their kernel before every operation (not after 5 s
    # of quiet): the vanished kernel is noticed at the next run.
    env = _env(gateway, CODEBOX_KERNEL_CHECK_AFTER="0")
    with running_server(tmp_path_factory, *args, env=env) as srv, \
            srv.client(KEY) as api:
        sid = api.get("/codebox/start").json()["id"]
        assert _run(api, sid, "z = 1")["error"] is None
        (kernel,) = gateway.kernel_ids()
        with gateway.client() as eg:
            assert eg.delete(f"/api/kernels/{kernel}").status_code == 204
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


def test_a_lifetime_is_enforced_after_the_server_restarts(gateway, shared, tmp_path_factory):
    args = shared(gateway)
    with running_server(tmp_path_factory, *args, env=_env(gateway)) as srv, \
            srv.client(KEY) as api:
        started = time.monotonic()
        timed = api.post("/codebox/start", json={"lifetime": 10}).json()["id"]
        kept = api.get("/codebox/start").json()["id"]
    # The first server stopped before the lifetime ran out: both kernels are still there.
    assert time.monotonic() - started < 10, "too slow to test: the first server culled it"
    assert len(gateway.kernel_ids()) == 2
    with running_server(tmp_path_factory, *args, env=_env(gateway)) as srv, \
            srv.client(KEY) as api:
        wait_until(lambda: len(gateway.kernel_ids()) == 1, timeout=40)
        assert time.monotonic() - started >= 10
        assert api.get(f"/codebox/{timed}/").status_code == 404
        assert api.get(f"/codebox/{kept}/").json()["status"] == "running"
        assert [s["id"] for s in api.get("/codebox/sessions").json()] == [kept]
        assert api.post(f"/codebox/{kept}/stop").status_code == 200
    assert gateway.kernel_ids() == []


def test_each_key_starts_kernels_for_a_user_of_its_own(tmp_path_factory):
    """Enterprise Gateway allowing one kernel per user: one per key."""
    with running_gateway("enterprise-gateway", tmp_path_factory.mktemp("eg-users"),
                         "--EnterpriseGatewayApp.max_kernels_per_user=1") as eg:
        env = {**_env(eg), "CODEBOX_SERVER_API_KEYS": f"{KEY},{OTHER_KEY}"}
        with running_server(tmp_path_factory, "--gateway-url", eg.url, "--kernel-user-per-key",
                            env=env) as srv, srv.client(KEY) as one, \
                srv.client(OTHER_KEY) as two:
            first, theirs = one.get("/codebox/start"), two.get("/codebox/start")
            assert first.status_code == theirs.status_code == 200, (first.text, theirs.text)
            probe = "import os\nos.environ['KERNEL_USERNAME']"
            mine = _run(one, first.json()["id"], probe)["content"]
            other = _run(two, theirs.json()["id"], probe)["content"]
            assert mine != other and mine.startswith("'codebox-") and KERNEL_USER not in mine
            # The gateway's limit of one kernel per user now holds per key...
            refused = one.get("/codebox/start")
            assert refused.status_code == 503, refused.text
            assert "max kernels per user" in refused.json()["detail"]
            # ...and a key's user is the same for its next session.
            assert one.post(f"/codebox/{first.json()['id']}/stop").status_code == 200
            again = one.get("/codebox/start")
            assert again.status_code == 200, again.text
            assert _run(one, again.json()["id"], probe)["content"] == mine
            for api, sid in ((one, again.json()["id"]), (two, theirs.json()["id"])):
                api.post(f"/codebox/{sid}/stop")
        assert eg.kernel_ids() == []
