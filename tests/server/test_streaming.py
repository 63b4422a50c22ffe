"""The wire format of ``run/stream`` and downloads, and clients that go away: a disconnect
mid-run interrupts the kernel (streamed or not)."""

from __future__ import annotations

import json
import time
import urllib.parse

import httpx
import pytest

pytestmark = pytest.mark.integration

SLOW = "print('go', flush=True)\nimport time\ntime.sleep(120)\nfinished = True"


def test_stream_is_ndjson_chunks_then_the_end(api, session):
    code = "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\n7 * 6"
    with api.stream("POST", f"/codebox/{session}/run/stream", json={"code": code}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[:-1] == [{"type": "stdout", "content": "a\n"},
                          {"type": "stderr", "content": "b\n"},
                          {"type": "text", "content": "42", "data": {"text/plain": "42"}}]
    end = lines[-1]
    assert end["type"] == "end"
    assert {k: end["output"][k] for k in ("type", "stdout", "stderr", "error")} == {
        "type": "text", "stdout": "a\n", "stderr": "b\n", "error": None}


def _next_run_is_prompt(api, session):
    # Had the kernel not been interrupted, this run would wait behind 120 s of sleep.
    started = time.monotonic()
    r = api.post(f"/codebox/{session}/run", json={"code": "'finished' in dir()"}, timeout=20)
    assert r.json()["content"] == "False" and time.monotonic() - started < 20


def test_disconnecting_from_a_stream_interrupts_the_run(api, session):
    with api.stream("POST", f"/codebox/{session}/run/stream", json={"code": SLOW}) as r:
        first = json.loads(next(r.iter_lines()))
        assert first == {"type": "stdout", "content": "go\n"}
    _next_run_is_prompt(api, session)


def test_disconnecting_from_a_run_interrupts_it(api, session):
    with pytest.raises(httpx.ReadTimeout):
        api.post(f"/codebox/{session}/run", json={"code": SLOW}, timeout=2)
    _next_run_is_prompt(api, session)


def test_download_by_query_or_body_names_the_file(api, session):
    name = "dir/naïve \"x\".txt"
    r = api.post(f"/codebox/{session}/upload", files={"file": (name, b"bytes\x00here")})
    assert r.status_code == 200 and r.json()["name"] == name
    by_query = api.get(f"/codebox/{session}/download", params={"file_name": name})
    by_body = api.request("GET", f"/codebox/{session}/download", json={"file_name": name})
    for got in (by_query, by_body):
        assert got.status_code == 200 and got.content == b"bytes\x00here"
        assert got.headers["content-type"] == "application/octet-stream"
        disposition = got.headers["content-disposition"]
        assert "filename*=UTF-8''" + urllib.parse.quote(name, safe="") in disposition
    missing = api.get(f"/codebox/{session}/download", params={"file_name": "nope.txt"})
    assert missing.status_code == 404 and "nope.txt" in missing.json()["detail"]
    assert api.get(f"/codebox/{session}/files").json() == {
        "files": [{"name": name, "size": 10}]}
