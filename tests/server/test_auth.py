"""Keys and ownership: 401 without a key, 403 with a wrong one, 404 for another key's
session; what needs no key (health, the OpenAPI document)."""

from __future__ import annotations

import pytest

from codebox import CodeBox, CodeBoxSettings
from codebox.errors import CodeBoxAuthError, CodeBoxNotFoundError
from tests.server.harness import KEY, OTHER_KEY

pytestmark = pytest.mark.integration

# Every session endpoint of PROTOCOL.md, with a valid body.
SESSION_CALLS = [
    ("GET", "/", None),
    ("POST", "/run", {"code": "1"}),
    ("POST", "/run/stream", {"code": "1"}),
    ("POST", "/interrupt", None),
    ("GET", "/files", None),
    ("GET", "/download?file_name=f.txt", None),
    ("POST", "/install", {"package_name": "x"}),
    ("POST", "/restart", None),
    ("POST", "/stop", None),
]


def _call(client, sid, method, suffix, body):
    return client.request(method, f"/codebox/{sid}{suffix}", json=body)


def test_no_key_is_401_and_a_wrong_key_403(server):
    with server.client(None) as anonymous, server.client("not-a-key") as wrong:
        for path in ("/codebox/start", "/codebox/capabilities", "/codebox/1/files"):
            r = anonymous.get(path)
            assert r.status_code == 401, r.text
            assert "API key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
            r = wrong.get(path)
            assert r.status_code == 403 and r.json() == {"detail": "invalid API key"}
    with server.client(None) as basic:
        r = basic.get("/codebox/start", headers={"Authorization": f"Basic {KEY}"})
        assert r.status_code == 401


def test_a_session_belongs_to_the_key_that_started_it(server, api, session):
    api.post(f"/codebox/{session}/run", json={"code": "secret = 'mine'"}).raise_for_status()
    api.post(f"/codebox/{session}/upload", files={"file": ("f.txt", b"x")}).raise_for_status()
    with server.client(OTHER_KEY) as other:
        for method, suffix, body in SESSION_CALLS:
            r = _call(other, session, method, suffix, body)
            assert r.status_code == 404, (method, suffix, r.text)
            assert r.json() == {"detail": f"no session {session}"}
    # Nothing the other key tried reached the session.
    r = api.post(f"/codebox/{session}/run", json={"code": "secret"})
    assert r.json()["content"] == "'mine'"
    assert api.get(f"/codebox/{session}/").json() == {"status": "running"}


def test_unknown_and_malformed_session_ids(api):
    assert api.get("/codebox/12345/").status_code == 404
    assert api.post("/codebox/12345/run", json={"code": "1"}).status_code == 404
    assert api.get("/codebox/not-a-number/files").status_code == 422


def test_the_client_raises_the_matching_errors(server, session):
    wrong = CodeBox(api_key="not-a-key", base_url=server.base_url,
                    settings=CodeBoxSettings(max_retries=0))
    with pytest.raises(CodeBoxAuthError) as info:
        wrong.start()
    assert info.value.http_status == 403 and info.value.json_body == {"detail": "invalid API key"}
    stranger = CodeBox.from_id(session, api_key=OTHER_KEY, base_url=server.base_url)
    with pytest.raises(CodeBoxNotFoundError):
        stranger.run("1")
    stranger.close()


def test_health_and_openapi_need_no_key_and_describe_every_endpoint(server):
    with server.client(None) as anonymous:
        root = server.url
        health = anonymous.get(f"{root}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        doc = anonymous.get(f"{root}/openapi.json").json()
    paths = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    v1 = "/api/v1/codebox"
    expected = {
        ("GET", f"{v1}/capabilities"), ("GET", f"{v1}/start"),
        ("GET", f"{v1}/{{session_id}}/"), ("POST", f"{v1}/{{session_id}}/run"),
        ("POST", f"{v1}/{{session_id}}/run/stream"), ("POST", f"{v1}/{{session_id}}/interrupt"),
        ("POST", f"{v1}/{{session_id}}/upload"), ("GET", f"{v1}/{{session_id}}/download"),
        ("POST", f"{v1}/{{session_id}}/install"), ("GET", f"{v1}/{{session_id}}/files"),
        ("POST", f"{v1}/{{session_id}}/restart"), ("POST", f"{v1}/{{session_id}}/stop"),
    }
    assert expected <= paths
    upload = doc["paths"][f"{v1}/{{session_id}}/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    stream = doc["paths"][f"{v1}/{{session_id}}/run/stream"]["post"]
    assert "application/x-ndjson" in stream["responses"]["200"]["content"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_capabilities_announce_every_extension(api):
    caps = api.get("/codebox/capabilities").json()
    assert set(caps["extensions"]) == {"rich-run", "stream", "interrupt", "file-sizes",
                                       "start-options", "shell", "file-ops", "bundles",
                                       "list", "lifetime", "templates", "snapshots"}
    import codebox
    assert caps["version"] == codebox.__version__
