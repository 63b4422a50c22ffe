"""`CodeBox(template=...)` against a mocked server (respx): what goes over the wire, and
what a server without templates, or a box without a key, does with it."""

from __future__ import annotations

import json

import pytest
import respx

from codebox import CodeBox, CodeBoxError, LocalBox, Template

BASE = "https://api.test/v1"
KEY = "sk-test-123"


@pytest.fixture
def api():
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def capabilities(api, *extensions: str) -> None:
    api.get("/codebox/capabilities").respond(
        json={"version": "1.0", "extensions": list(extensions), "templates": ["data"]})


def test_the_template_goes_in_the_start_request(api):
    capabilities(api, "start-options", "templates")
    start = api.post("/codebox/start").respond(json={"id": 7})
    api.post("/codebox/7/stop").respond(json={"status": "stopped"})
    with CodeBox(api_key=KEY, base_url=BASE, template="data", env={"A": "1"}) as box:
        box.start()
        assert box.session_id == "7"
    assert json.loads(start.calls[0].request.content) == {"env": {"A": "1"},
                                                          "template": "data"}


def test_a_server_without_templates_is_told_before_anything_starts(api):
    capabilities(api, "start-options")
    start = api.post("/codebox/start").respond(json={"id": 7})
    box = CodeBox(api_key=KEY, base_url=BASE, template="data")
    with pytest.raises(CodeBoxError, match="'templates'"):
        box.start()
    assert not start.called
    box.close()


def test_a_template_by_name_is_a_servers_and_a_template_object_a_local_boxs():
    with pytest.raises(TypeError, match="named"):
        CodeBox(api_key=KEY, base_url=BASE, template=Template(packages=["six"]))
    with pytest.raises(CodeBoxError, match="server"):
        CodeBox(template="data")
    template = Template(packages=["six"])
    local = CodeBox(template=template)
    assert isinstance(local, LocalBox) and local._template.template == template
