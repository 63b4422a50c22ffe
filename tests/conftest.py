"""Shared test plumbing.

Every process this test run starts carries ``CODEBOX_TEST_RUN=<id>`` in its environment
(the gateway inherits it, its kernels inherit it from the gateway), so the last check of
the run can find anything we left behind, and nothing else. The id is the run's, not a
worker's: pytest-xdist's workers inherit it from the process that starts them, and that
process makes the last check once every worker is done.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.helpers import box_leftovers, our_processes, wait_until

RUN_ID = os.environ.get("CODEBOX_TEST_RUN") or uuid.uuid4().hex  # (a worker: the run's)
os.environ["CODEBOX_TEST_RUN"] = RUN_ID
# Settings come from the tests, not from the developer's shell or .env (the tests' own
# knobs, ``CODEBOX_TEST_*`` and ``CODEBOX_RACE_*``, stay).
for _key in list(os.environ):
    if _key.startswith("CODEBOX_") and not _key.startswith(("CODEBOX_TEST_", "CODEBOX_RACE_")):
        del os.environ[_key]


@pytest.fixture(scope="session", autouse=True)
def gateway_closed():
    """This process's spawned gateway goes with its tests."""
    yield
    from codebox.local._gateway import shared_gateway

    shared_gateway.close()


_BEFORE: set[str] = set()  # the mounts and cgroups of boxes there before the run


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        _BEFORE.update(box_leftovers())


def pytest_sessionfinish(session, exitstatus):
    """The run's last check, where the run began (not in an xdist worker: others may still
    be running): nothing any test started is left, no process, no box's mount or cgroup."""
    if hasattr(session.config, "workerinput"):
        return
    from codebox.local._gateway import shared_gateway

    shared_gateway.close()
    report = session.config.pluginmanager.get_plugin("terminalreporter")
    for what, left in (("processes", our_processes),
                       ("box mounts or cgroups", lambda: box_leftovers() - _BEFORE)):
        try:
            wait_until(lambda left=left: not left(), timeout=15)
        except AssertionError:
            report.write_line(f"FAILED: {what} left behind by the tests: {left()}", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def template_cache(tmp_path_factory):
    """The template cache of this run (``CODEBOX_CACHE_DIR``, which servers started by the
    tests inherit): a template is built once per run. uv's own cache is kept between runs,
    under ``~/.cache/codebox-tests/uv``: it holds downloads, never a template."""
    root = tmp_path_factory.mktemp("codebox-cache")
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ["CODEBOX_CACHE_DIR"] = str(root)
    os.environ.setdefault("UV_CACHE_DIR", str(cache_home / "codebox-tests" / "uv"))
    yield root
    os.environ.pop("CODEBOX_CACHE_DIR", None)


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
