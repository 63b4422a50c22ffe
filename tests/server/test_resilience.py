"""A gateway that dies: the server starts a new one, and its sessions say once that their
state is gone. (Kernels that die are in the conformance suite.)"""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import wait_until
from tests.server.harness import KEY, running_server

pytestmark = pytest.mark.integration


def _run(api, sid, code, **extra):
    r = api.post(f"/codebox/{sid}/run", json={"code": code, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _gateway_pids(server):
    return {pid for pid, cmd in server.leftovers() if "_gateway_app" in cmd}


def test_a_dead_gateway_is_restarted_and_its_sessions_say_their_state_is_gone(
        tmp_path_factory):
    env = {"CODEBOX_SERVER_API_KEYS": KEY}
    with running_server(tmp_path_factory, env=env) as srv, srv.client(KEY) as api:
        sid = api.get("/codebox/start").json()["id"]
        _run(api, sid, "state = 'here'")
        api.post(f"/codebox/{sid}/upload", files={"file": ("kept.txt", b"kept")})
        (gateway,) = _gateway_pids(srv)
        os.kill(gateway, signal.SIGKILL)
        # The server notices by itself and starts a new gateway.
        wait_until(lambda: _gateway_pids(srv) - {gateway}, timeout=30)
        out = _run(api, sid, "print('never')")
        assert out["error"]["name"] == "KernelDiedError"
        assert "state" not in out["stdout"] and "variables are gone" in out["error"]["value"]
        assert out["stdout"] == ""  # the code did not run
        # Said once; then the session works on a fresh kernel, with its files.
        assert _run(api, sid, "'state' in dir()")["content"] == "False"
        assert _run(api, sid, "open('kept.txt').read()")["content"] == "'kept'"
        assert api.get("/codebox/start").status_code == 200
