"""Shared test plumbing.

Every process this test run starts carries ``CODEBOX_TEST_RUN=<id>`` in its environment
(the gateway inherits it, its kernels inherit it from the gateway), so the last check of
the session can find anything we left behind, and nothing else.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.helpers import our_processes, wait_until

RUN_ID = uuid.uuid4().hex
os.environ["CODEBOX_TEST_RUN"] = RUN_ID
# Settings come from the tests, not from the developer's shell or .env.
for _key in list(os.environ):
    if _key.startswith("CODEBOX_") and _key != "CODEBOX_TEST_RUN":
        del os.environ[_key]


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    yield
    from codebox.local._gateway import shared_gateway

    shared_gateway.close()
    try:
        wait_until(lambda: not our_processes(), timeout=15)
    except AssertionError:
        pytest.fail(f"processes left behind by the tests: {our_processes()}")


_REAL_PARTS = ("integration", "server", "conformance", "sandbox")


def pytest_collection_modifyitems(items):
    """Tests in the folders that start real gateways, kernels and servers are `integration`
    (select them with ``-m integration``, leave them out with ``-m "not integration"``)."""
    for item in items:
        if any(part in _REAL_PARTS for part in item.path.parent.parts[-1:]):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the end of the log of every ``codebox serve`` running then: a
    500 says why only there."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        from tests.server.harness import ServerProcess

        for server in list(ServerProcess.live):
            tail = "\n".join(server.log().splitlines()[-60:])
            report.sections.append((f"codebox serve {server.url}: end of its log", tail))
