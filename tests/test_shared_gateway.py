"""The process-wide gateway's bookkeeping, over stand-in gateway processes: which report
of an unreachable gateway replaces it, and which does not."""

from __future__ import annotations

from typing import ClassVar

import pytest

from codebox import CodeBoxSettings
from codebox.local import _gateway


class FakeProcess:
    started: ClassVar[list[FakeProcess]] = []

    def __init__(self, **options):
        self.pid = 1000 + len(self.started)
        self.url = f"http://127.0.0.1:{self.pid}"
        self.token = "t"
        self.running = True
        self.refusing = False
        self.template_roots: list[str] = []
        self.started.append(self)

    def know_templates(self, root: str) -> None:
        self.template_roots.append(root)

    def alive(self) -> bool:
        return self.running

    def refuses(self) -> bool:
        return self.refusing

    def close(self, timeout: float = 5.0) -> None:
        self.running = False


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.setattr(_gateway, "GatewayProcess", FakeProcess)
    FakeProcess.started = []
    gateway = _gateway.SharedGateway()
    yield gateway
    gateway.close()


SETTINGS = CodeBoxSettings(sandbox=False)


def test_a_gateway_that_refuses_connections_is_replaced_though_not_yet_reaped(shared):
    first = shared.acquire(SETTINGS)
    FakeProcess.started[0].refusing = True  # killed: its socket is closed, the process not
    second = shared.current(SETTINGS, refused=first)
    assert second.generation == first.generation + 1 and second.url != first.url
    assert not FakeProcess.started[0].running and len(FakeProcess.started) == 2
    # Another box's late report of the old address changes nothing.
    assert shared.current(SETTINGS, refused=first) == second


def test_a_gateway_that_still_accepts_connections_is_kept(shared):
    # An unreachable moment (a reset connection) must not take the kernels of every box.
    first = shared.acquire(SETTINGS)
    assert shared.current(SETTINGS, refused=first) == first
    assert FakeProcess.started[0].running and len(FakeProcess.started) == 1


def test_a_gateway_that_died_is_replaced_without_a_report(shared):
    first = shared.acquire(SETTINGS)
    FakeProcess.started[0].running = False
    assert shared.current(SETTINGS).generation == first.generation + 1


def test_refuses_tells_a_closed_port_from_a_listening_one():
    import socket

    probe = object.__new__(_gateway.GatewayProcess)  # only its port matters here
    with socket.create_server(("127.0.0.1", 0)) as listening:
        probe.port = listening.getsockname()[1]
        assert not probe.refuses()
    assert probe.refuses()  # closed now: nothing listens there


def test_the_gateway_finds_the_templates_of_every_users_cache(shared, tmp_path):
    shared.acquire(CodeBoxSettings(sandbox=False, cache_dir=tmp_path / "one"))
    shared.acquire(CodeBoxSettings(sandbox=False, cache_dir=tmp_path / "two"))
    assert FakeProcess.started[0].template_roots == [str(tmp_path / "one" / "templates"),
                                                     str(tmp_path / "two" / "templates")]
