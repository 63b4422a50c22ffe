"""Integration fixtures: real Kernel Gateways, real kernels.

`Flavour` lets one test body drive a box through its sync methods or through their async
twins on an event loop, so every behaviour is checked both ways.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from codebox import LocalBox

pytestmark = pytest.mark.integration


class Flavour:
    """Calls ``box.name(...)`` (sync) or runs ``box.aname(...)`` on a loop (async)."""

    def __init__(self, box: Any, kind: str) -> None:
        self.box = box
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def __getattr__(self, name: str) -> Any:
        if self.kind == "sync":
            return getattr(self.box, name)
        twin = getattr(self.box, "a" + name)

        def call(*args: Any, **kwargs: Any) -> Any:
            assert self.loop is not None
            result = twin(*args, **kwargs)
            if inspect.isasyncgen(result):
                return self.loop.run_until_complete(_collect(result))
            return self.loop.run_until_complete(result)

        return call

    def stream(self, code: str, **kwargs: Any) -> list:
        if self.kind == "sync":
            return list(self.box.stream(code, **kwargs))
        assert self.loop is not None
        return self.loop.run_until_complete(_collect(self.box.astream(code, **kwargs)))

    def close(self) -> None:
        self.stop()
        if self.loop is not None:
            self.loop.close()


async def _collect(agen: Any) -> list:
    return [item async for item in agen]


@pytest.fixture(scope="module", params=["sync", "async"])
def box(request):
    """A started box shared by the tests of a module, in each flavour."""
    flavour = Flavour(LocalBox(), request.param)
    flavour.start()
    yield flavour
    flavour.close()


@pytest.fixture(params=["sync", "async"])
def fresh_box(request):
    """A box of its own, for tests that restart or kill its kernel."""
    flavour = Flavour(LocalBox(), request.param)
    yield flavour
    flavour.close()
