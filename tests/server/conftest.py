"""Fixtures of the server tests: real `codebox serve` processes, each with its own gateway."""

from __future__ import annotations

import pytest

from tests.server.harness import KEY, OTHER_KEY, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with two keys and small limits, shared by the tests of a module."""
    env = {
        "CODEBOX_SERVER_API_KEYS": f"{KEY},{OTHER_KEY}",
        "CODEBOX_SERVER_MAX_SESSIONS_PER_KEY": "3",
        "CODEBOX_SERVER_MAX_UPLOAD_SIZE": str(1024 * 1024),
        "CODEBOX_SERVER_RUN_TIMEOUT": "3",
    }
    with running_server(tmp_path_factory, env=env) as srv:
        yield srv


@pytest.fixture()
def api(server):
    with server.client(KEY) as client:
        yield client


@pytest.fixture()
def session(api):
    """A session of `KEY`, stopped after the test."""
    response = api.get("/codebox/start")
    assert response.status_code == 200, response.text
    sid = response.json()["id"]
    yield sid
    api.post(f"/codebox/{sid}/stop")


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the whole run (each test takes a database of its own)."""
    from tests.postgres import running_postgres

    with running_postgres() as cluster:
        yield cluster


@pytest.fixture()
def postgres_url(postgres):
    """The URL of a fresh, empty database, dropped after the test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a store lives, once per implementation: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "sessions.sqlite3")
    return request.getfixturevalue("postgres_url")
