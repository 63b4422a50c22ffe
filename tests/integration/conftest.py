"""Integration fixtures: real Kernel Gateways, real kernels.

`Flavour` lets one test body drive a box through its sync methods or through their async
twins on an event loop, so every behaviour is checked both ways.
"""

from __future__ import annotations

import pytest

from codebox import LocalBox
from tests.flavour import Flavour


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
