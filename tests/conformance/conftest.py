"""The backends and flavours every conformance test runs against.

A backend is a kind of box: ``local`` (`LocalBox` on the gateway it spawns), ``kg`` and
``eg`` (`LocalBox(gateway_url=...)` on a stock Jupyter Kernel Gateway and a stock Enterprise
Gateway), ``server`` (`CodeBox` talking to a real ``codebox serve`` started for this test
run) and ``server-eg`` (the same, the server's kernels on the Enterprise Gateway). A flavour
is how the test drives it: ``sync`` methods, or their ``async`` twins on an event loop. Each
test is written once and runs in every combination; a difference between them is a bug to
fix, never a case to parametrise. Only combinations whose code paths differ run: both
flavours of the local box (two transports), one of each other backend (the same
transports as a flavour run elsewhere), which keeps the suite's time in check.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from codebox import CodeBox, CodeBoxSettings, LocalBox
from tests.flavour import Flavour
from tests.gateways import running_gateway
from tests.server.harness import running_server

SERVER_KEY = "conformance-key"
# Enterprise Gateway refuses kernels for root, which the tests may run as.
KERNEL_USER = "codebox-tests"
# Where the code paths differ: the local box's two transports; the server (its client's
# sync and async transports are the same REST operations, tested on both in memory); the
# stock gateways; the server on Enterprise Gateway.
COMBINATIONS = [
    ("local", "sync"), ("local", "async"), ("server", "sync"), ("kg", "sync"),
    ("eg", "async"), ("server-eg", "async"),
]
IDS = [f"{backend}-{flavour}" for backend, flavour in COMBINATIONS]


@pytest.fixture(scope="package")
def codebox_server(tmp_path_factory):
    """One ``codebox serve`` for the conformance suite (gone before other tests that
    count processes)."""
    # Sandboxed and without network, as served by default (`install` needs none).
    env = {"CODEBOX_SERVER_API_KEYS": SERVER_KEY}
    with running_server(tmp_path_factory, env=env) as srv:
        yield srv


@pytest.fixture(scope="package")
def kernel_gateway(tmp_path_factory):
    """A stock Jupyter Kernel Gateway."""
    with running_gateway("kernel-gateway", tmp_path_factory.mktemp("kg")) as gateway:
        yield gateway


@pytest.fixture(scope="package")
def enterprise_gateway(tmp_path_factory):
    """A stock Jupyter Enterprise Gateway (in its own venv, built once and cached)."""
    with running_gateway("enterprise-gateway", tmp_path_factory.mktemp("eg")) as gateway:
        yield gateway


@pytest.fixture(scope="package")
def eg_server(tmp_path_factory, enterprise_gateway):
    """``codebox serve --gateway-url`` on the Enterprise Gateway."""
    env = {"CODEBOX_SERVER_API_KEYS": SERVER_KEY, "CODEBOX_KERNEL_USERNAME": KERNEL_USER,
           "CODEBOX_SERVER_GATEWAY_TOKEN": enterprise_gateway.token}
    with running_server(tmp_path_factory, "--gateway-url", enterprise_gateway.url,
                        env=env) as srv:
        yield srv


def new_box(backend: str, request: pytest.FixtureRequest, **options: Any) -> Any:
    """A box of ``backend``, not started; ``options`` are those both boxes take (``env``)."""
    if backend == "local":
        return LocalBox(**options)
    if backend in ("kg", "eg"):
        fixture = "kernel_gateway" if backend == "kg" else "enterprise_gateway"
        gateway = request.getfixturevalue(fixture)
        return LocalBox(gateway_url=gateway.url, gateway_token=gateway.token,
                        settings=CodeBoxSettings(kernel_username=KERNEL_USER), **options)
    server = request.getfixturevalue("eg_server" if backend == "server-eg" else "codebox_server")
    return CodeBox(api_key=SERVER_KEY, base_url=server.base_url, **options)


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
    """Makes started boxes of one backend and flavour (stopped after the test); keyword
    options go to the box (``env``)."""
    backend, kind = request.param
    made: list[Flavour] = []
    loop = asyncio.new_event_loop() if kind == "async" else None

    def make(**options: Any) -> Flavour:
        flavour = Flavour(new_box(backend, request, **options), kind)
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
