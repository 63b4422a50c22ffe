"""Lifetimes and lists on a real `codebox serve`: ``GET /codebox/sessions`` shows a key its
own sessions only; a session stops by itself its lifetime after its last use, and every
request extends it."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.helpers import wait_until
from tests.server.harness import KEY, OTHER_KEY, running_server

MAX_LIFETIME = 600


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's server (the `api` fixture of conftest.py is a client of it)."""
    env = {"CODEBOX_SERVER_API_KEYS": f"{KEY},{OTHER_KEY}",
           "CODEBOX_SERVER_MAX_LIFETIME": str(MAX_LIFETIME),
           "CODEBOX_SERVER_IDLE_TIMEOUT": "3600"}
    with running_server(tmp_path_factory, env=env) as srv:
        yield srv


def _start(api, **body) -> int:
    response = api.post("/codebox/start", json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _when(text: str) -> float:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0, text
    return moment.timestamp()


def test_capabilities_announce_list_and_lifetime(api):
    extensions = api.get("/codebox/capabilities").json()["extensions"]
    assert "list" in extensions and "lifetime" in extensions


def test_a_key_lists_its_own_sessions_with_their_times(server, api):
    before = time.time()
    plain = _start(api)
    timed = _start(api, lifetime=120)
    with server.client(OTHER_KEY) as other:
        theirs = _start(other)
        try:
            listed = api.get("/codebox/sessions")
            assert listed.status_code == 200, listed.text
            by_id = {s["id"]: s for s in listed.json()}
            assert set(by_id) == {plain, timed}
            assert [s["id"] for s in other.get("/codebox/sessions").json()] == [theirs]
        finally:
            other.post(f"/codebox/{theirs}/stop")
    for entry in by_id.values():
        assert entry["status"] == "running" and entry["template"] is None
        created, used = _when(entry["created"]), _when(entry["last_used"])
        assert before - 1 <= created <= used <= time.time() + 1
    assert _when(by_id[timed]["expires"]) == pytest.approx(
        _when(by_id[timed]["last_used"]) + 120, abs=0.01)
    assert _when(by_id[plain]["expires"]) == pytest.approx(
        _when(by_id[plain]["last_used"]) + 3600, abs=0.01)
    # A request moves last_used, and with it expires.
    assert api.post(f"/codebox/{timed}/run", json={"code": "1"}).status_code == 200
    (again,) = [s for s in api.get("/codebox/sessions").json() if s["id"] == timed]
    assert _when(again["last_used"]) > _when(by_id[timed]["last_used"])
    for sid in (plain, timed):
        assert api.post(f"/codebox/{sid}/stop").status_code == 200
    assert api.get("/codebox/sessions").json() == []


def test_set_lifetime_answers_when_the_session_expires(server, api):
    sid = _start(api)
    try:
        answer = api.post(f"/codebox/{sid}/lifetime", json={"seconds": 300})
        assert answer.status_code == 200, answer.text
        assert _when(answer.json()["expires"]) == pytest.approx(time.time() + 300, abs=5)
        # Past the server's most: cut to it; null: back to the idle timeout.
        capped = api.post(f"/codebox/{sid}/lifetime", json={"seconds": 1e9}).json()
        assert _when(capped["expires"]) == pytest.approx(time.time() + MAX_LIFETIME, abs=5)
        reset = api.post(f"/codebox/{sid}/lifetime", json={"seconds": None}).json()
        assert _when(reset["expires"]) == pytest.approx(time.time() + 3600, abs=5)
        for bad in ({"seconds": 0}, {"seconds": -1}, {"seconds": "soon"}, {}):
            refused = api.post(f"/codebox/{sid}/lifetime", json=bad)
            assert refused.status_code == 422 and "detail" in refused.json(), bad
        refused = api.post("/codebox/start", json={"lifetime": 0})
        assert refused.status_code == 422
        with server.client(OTHER_KEY) as other:
            stolen = other.post(f"/codebox/{sid}/lifetime", json={"seconds": 1})
            assert stolen.status_code == 404
        assert api.post("/codebox/123/lifetime", json={"seconds": 1}).status_code == 404
    finally:
        api.post(f"/codebox/{sid}/stop")


def test_a_session_stops_its_lifetime_after_its_last_use_and_every_call_extends_it(api):
    sid = _start(api, lifetime=3)
    kept = _start(api)
    try:
        # Used now and then for longer than its lifetime: it stays...
        until = time.monotonic() + 6
        while time.monotonic() < until:
            assert api.post(f"/codebox/{sid}/run", json={"code": "x = 1"}).status_code == 200
            time.sleep(1)  # a client that comes back now and then, not a wait
        assert api.post(f"/codebox/{sid}/run", json={"code": "x"}).json()["content"] == "1"
        # ...left alone, it stops by itself, and the session beside it does not.
        stopped_by = time.monotonic()
        wait_until(lambda: api.get(f"/codebox/{sid}/").status_code == 404, timeout=20)
        assert time.monotonic() - stopped_by >= 2.5
        # Listed as stopping while its kernel is deleted, then gone.
        wait_until(lambda: [s["id"] for s in api.get("/codebox/sessions").json()] == [kept],
                   timeout=20)
        # A lifetime given later counts from then.
        assert api.post(f"/codebox/{kept}/lifetime", json={"seconds": 1}).status_code == 200
        wait_until(lambda: api.get(f"/codebox/{kept}/").status_code == 404, timeout=20)
    finally:
        for s in (sid, kept):
            api.post(f"/codebox/{s}/stop")


def test_codebox_lists_and_sets_lifetimes_through_the_server(server):
    from codebox import CodeBox

    box = CodeBox(api_key=KEY, base_url=server.base_url, lifetime=120)
    try:
        box.start()
        (info,) = [i for i in CodeBox.list(api_key=KEY, base_url=server.base_url)
                   if i.session_id == box.session_id]
        assert info.status == "running" and info.expires is not None
        assert info.expires.timestamp() == pytest.approx(info.last_used.timestamp() + 120,
                                                         abs=0.01)
        assert box.session_id not in {
            i.session_id for i in CodeBox.list(api_key=OTHER_KEY, base_url=server.base_url)}
        expires = box.set_lifetime(1)
        assert expires.timestamp() == pytest.approx(time.time() + 1, abs=2)
        wait_until(lambda: box.session_id not in {
            i.session_id for i in CodeBox.list(api_key=KEY, base_url=server.base_url)},
            timeout=20)

        async def twins():
            other = CodeBox(api_key=KEY, base_url=server.base_url)
            await other.astart()
            try:
                assert (await other.aset_lifetime(300)) is not None
                listed = await CodeBox.alist(api_key=KEY, base_url=server.base_url)
                assert other.session_id in {i.session_id for i in listed}
            finally:
                await other.astop()

        import asyncio

        asyncio.run(twins())
    finally:
        box.close()


def test_a_request_outlasting_a_tiny_lifetime_is_not_cut(api):
    # A lifetime far shorter than the server's housekeeping step, set while a run is going:
    # the run ends as it would (its session is in use), and the session stops after it.
    sid = _start(api)
    code = "import time\nprint('in', flush=True)\ntime.sleep(3)\nprint('done')"
    lines = []
    with api.stream("POST", f"/codebox/{sid}/run/stream", json={"code": code}) as answer:
        for line in answer.iter_lines():
            lines.append(line)
            if len(lines) == 1:
                assert api.post(f"/codebox/{sid}/lifetime",
                                json={"seconds": 1e-9}).status_code == 200
    assert any('done' in line for line in lines) and "stopped" not in "".join(lines), lines
    wait_until(lambda: api.get(f"/codebox/{sid}/").status_code == 404, timeout=20)
