"""What a tenant can do to the server with bad requests alone: ids past what the store
holds, methods a path does not serve; and a server that stops leaves nothing of its
boxes behind (cgroups, filesystems)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tests.server.harness import KEY, ServerProcess, running_server

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sid, status", [(2**63, 422), (2**64 + 7, 422), (0, 422), (-1, 422),
                                         (2**63 - 1, 404), (12345, 404)])
def test_session_ids_past_what_the_store_holds_are_a_4xx_with_a_json_body(server, sid, status):
    with server.client(KEY) as api:
        for method, path in (("GET", f"/codebox/{sid}/"), ("POST", f"/codebox/{sid}/run"),
                             ("POST", f"/codebox/{sid}/stop")):
            r = api.request(method, path, json={"code": "1"})
            assert r.status_code == status, (method, path, r.text)
            assert r.headers["content-type"] == "application/json" and r.json()["detail"]


def test_a_method_a_path_does_not_serve_is_a_405_naming_every_method_it_does(server):
    with server.client(KEY) as api:
        r = api.request("OPTIONS", "/codebox/start")
        assert r.status_code == 405 and r.json()["detail"]
        assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}
        r = api.request("DELETE", "/codebox/capabilities")
        assert r.status_code == 405 and r.headers["allow"].startswith("GET")


def test_the_schema_states_the_session_id_range(server):
    document = httpx.get(f"{server.url}/openapi.json", trust_env=False).json()
    run = document["paths"]["/api/v1/codebox/{session_id}/run"]["post"]
    (param,) = [p for p in run["parameters"] if p["name"] == "session_id"]
    assert param["schema"]["minimum"] == 1 and param["schema"]["maximum"] == 2**63 - 1


def _codebox_cgroups(kernels: list[str]) -> list[str]:
    return [str(p) for kernel in kernels
            for p in Path("/sys/fs/cgroup").glob(f"*/**/codebox-{kernel}-*")]


def test_a_stopped_server_leaves_no_cgroup_and_no_mount_of_its_boxes(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    env = {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_DATA_DIR": str(data)}
    with running_server(tmp_path_factory, env=env) as srv, srv.client(KEY) as api:
        sids = [api.get("/codebox/start").json()["id"] for _ in range(2)]
        for sid in sids:
            assert api.post(f"/codebox/{sid}/run", json={"code": "6 * 7"}).json()[
                "content"] == "42"
        kernels = re.findall(r"started \(kernel ([0-9a-f-]+)\)", srv.log())
        assert len(kernels) == 2 and _codebox_cgroups(kernels)
        mounts = [d for d in (data / "boxes").glob("*/work") if d.is_mount()]
        # As root, each box's working directory is a filesystem (the warm kernel's too).
        assert len(mounts) >= 2
    # running_server stopped it (SIGTERM, exit code 0, no process left)
    wait_until(lambda: not _codebox_cgroups(kernels), timeout=10)
    mounted = Path("/proc/self/mountinfo").read_text()
    assert str(data) not in mounted


def test_the_next_server_on_a_killed_servers_data_dir_unmounts_its_boxes(tmp_path_factory):
    """Killed (nothing of it could clean up), its boxes' filesystems stay mounted; the next
    server on the same data directory unmounts them before it starts any box."""
    data = tmp_path_factory.mktemp("data")
    env = {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_DATA_DIR": str(data)}
    killed = ServerProcess(env=env, log_dir=tmp_path_factory.mktemp("killed"))
    try:
        with killed.client(KEY) as api:
            sid = api.get("/codebox/start").json()["id"]
            assert api.post(f"/codebox/{sid}/run", json={"code": "6 * 7"}).json()[
                "content"] == "42"
        mounted = [d for d in (data / "boxes").glob("*/work") if d.is_mount()]
        assert mounted
    finally:
        killed.kill()
    assert all(d.is_mount() for d in mounted)  # (what the next server finds)
    with running_server(tmp_path_factory, env=env) as srv, srv.client(KEY) as api:
        assert api.get("/codebox/capabilities").status_code == 200
        assert not [d for d in mounted if d.is_mount()]
