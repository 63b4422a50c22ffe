"""The backends and flavours every conformance test runs against.

A backend is a kind of box: ``local`` (`LocalBox`) or ``server`` (`CodeBox` talking to a
real ``codebox serve`` started for this test run). A flavour is how the test drives it:
``sync`` methods, or their ``async`` twins on an event loop. Each test is written once and
runs in all four combinations; a difference between them is a bug to fix, never a case to
parametrise.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from codebox import CodeBox, LocalBox
from tests.server.harness import running_server

SERVER_KEY = "conformance-key"
COMBINATIONS = [("local", "sync"), ("local", "async"), ("server", "sync"), ("server", "async")]
IDS = [f"{backend}-{flavour}" for backend, flavour in COMBINATIONS]


class Flavour:
    """Calls ``box.name(...)`` (sync) or runs ``box.aname(...)`` to completion on this
    flavour's own loop (async); streams come back as lists either way."""

    def __init__(self, box: Any, kind: str) -> None:
        self.box = box
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def __getattr__(self, name: str) -> Any:
        if self.kind == "sync":
            return getattr(self.box, name)
        twin = getattr(self.box, "a" + name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = twin(*args, **kwargs)
            if inspect.isasyncgen(result):
                return self.wait(_collect(result))
            return self.wait(result)

        return call

    def wait(self, awaitable: Any) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(awaitable)

    def stream(self, code: str, **kwargs: Any) -> list:
        if self.kind == "sync":
            return list(self.box.stream(code, **kwargs))
        return self.wait(_collect(self.box.astream(code, **kwargs)))

    def close(self) -> None:
        self.stop()
        if self.loop is not None:
            self.loop.close()


async def _collect(agen: Any) -> list:
    return [item async for item in agen]


@pytest.fixture(scope="package")
def codebox_server(tmp_path_factory):
    """One ``codebox serve`` for the conformance suite (gone before other tests that
    count processes)."""
    with running_server(tmp_path_factory, env={"CODEBOX_SERVER_API_KEYS": SERVER_KEY}) as srv:
        yield srv


def new_box(backend: str, request: pytest.FixtureRequest) -> Any:
    """A box of ``backend``, not started."""
    if backend == "local":
        return LocalBox()
    server = request.getfixturevalue("codebox_server")
    return CodeBox(api_key=SERVER_KEY, base_url=server.base_url)


@pytest.fixture(scope="module", params=COMBINATIONS, ids=IDS)
def box(request):
    """A started box shared by the tests of a module, per backend and flavour."""
    backend, kind = request.param
    flavour = Flavour(new_box(backend, request), kind)
    flavour.start()
    yield flavour
    flavour.close()


@pytest.fixture(params=COMBINATIONS, ids=IDS)
def fresh_box(request):
    """A box of its own, for tests that restart, stop or kill its kernel."""
    backend, kind = request.param
    flavour = Flavour(new_box(backend, request), kind)
    yield flavour
    flavour.close()


@pytest.fixture(params=COMBINATIONS, ids=IDS)
def make_box(request):
    """Makes started boxes of one backend and flavour (stopped after the test)."""
    backend, kind = request.param
    made: list[Flavour] = []
    loop = asyncio.new_event_loop() if kind == "async" else None

    def make() -> Flavour:
        flavour = Flavour(new_box(backend, request), kind)
        if loop is not None:
            flavour.loop.close()
            flavour.loop = loop  # boxes of one test share a loop, so they can run together
        made.append(flavour)
        flavour.start()
        return flavour

    yield make
    for flavour in made:
        flavour.stop()
    if loop is not None:
        loop.close()
