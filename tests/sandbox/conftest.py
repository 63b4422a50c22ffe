"""Fixtures of the sandbox tests: pairs of sandboxed boxes — an attacker and its victim —
on a spawned gateway (`LocalBox`) and on a real two-key ``codebox serve``.

Every attack is made from inside the attacker's box, with what a tenant knows or can guess
(paths and pids are handed to it: secrecy of a name is not the protection under test).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from codebox import BaseBox, CodeBox, LocalBox, Sandbox
from codebox.local._gateway import shared_gateway
from tests.server.harness import KEY, OTHER_KEY, running_server


@dataclasses.dataclass
class Site:
    """Where the attack happens: the two boxes and the host processes around them."""

    kind: str
    attacker: BaseBox
    victim: BaseBox
    gateway_pid: int
    runtime_dir: str
    server_pid: int | None = None
    server_secrets: tuple[str, ...] = ()


def probe(box: BaseBox, code: str) -> str:
    """Run ``code`` in ``box``; its stdout (the run must not fail)."""
    out = box.run(code, timeout=60)
    assert out.error is None, out.error
    return out.stdout


def gateway_runtime_dir(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"JUPYTER_RUNTIME_DIR="):
            return item.split(b"=", 1)[1].decode()
    raise AssertionError("the gateway has no JUPYTER_RUNTIME_DIR")


@pytest.fixture(scope="package")
def sandbox_server(tmp_path_factory):
    env = {"CODEBOX_SERVER_API_KEYS": f"{KEY},{OTHER_KEY}",
           "CODEBOX_SERVER_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    with running_server(tmp_path_factory, env=env) as srv:
        yield srv


def _local_site() -> Site:
    attacker, victim = LocalBox(sandbox=True), LocalBox(sandbox=True)
    attacker.start()
    victim.start()
    pid = shared_gateway.pid
    assert pid is not None
    return Site("local", attacker, victim, pid, gateway_runtime_dir(pid))


def _server_site(srv) -> Site:
    attacker = CodeBox(api_key=KEY, base_url=srv.base_url)
    victim = CodeBox(api_key=OTHER_KEY, base_url=srv.base_url)
    attacker.start()
    victim.start()
    gateway = [pid for pid, cmd in srv.leftovers() if "_gateway_app.py" in cmd]
    assert len(gateway) == 1
    return Site("server", attacker, victim, gateway[0], gateway_runtime_dir(gateway[0]),
                server_pid=srv.proc.pid, server_secrets=(KEY, OTHER_KEY))


@pytest.fixture(scope="module", params=["local", "server"])
def site(request):
    """An attacker and a victim, both sandboxed, on each backend."""
    if request.param == "local":
        made = _local_site()
    else:
        made = _server_site(request.getfixturevalue("sandbox_server"))
    yield made
    for box in (made.attacker, made.victim):
        _end(box)


@pytest.fixture(scope="module")
def small_box():
    """A sandboxed box with small limits, shared by the limit tests."""
    box = LocalBox(sandbox=Sandbox(memory_mb=600, max_processes=40, disk_mb=16))
    box.start()
    yield box
    _end(box)


def _end(box: BaseBox) -> None:
    box.stop()
    close = getattr(box, "close", None)  # a REST client's HTTP connections
    if close is not None:
        close()


def pool_state() -> dict:
    proc = shared_gateway._process
    assert proc is not None
    return httpx.get(f"{proc.url}/codebox/pool", headers={"Authorization": f"token {proc.token}"},
                     trust_env=False, timeout=10).json()
