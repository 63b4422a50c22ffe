"""``codebox serve --template NAME=FILE``: the names in the capabilities, sessions started
from a template (sandboxed: the server's default) from its warm pool, unknown names."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from codebox import CodeBox, CodeBoxError, Template, build_template
from codebox.cli import main
from codebox.server.settings import ServerSettings
from tests.helpers import kernel_host_pid
from tests.server.harness import KEY, running_server

DATA = Template(packages=["six"], preload=["six as tpl_six"], env={"TEMPLATE_MODE": "data"})
REQS = "six\nidna\n"


@pytest.fixture(scope="module")
def server(template_cache, tmp_path_factory):
    files = tmp_path_factory.mktemp("templates")
    (files / "data.toml").write_text(
        'packages = ["six"]\npreload = ["six as tpl_six"]\nenv = {TEMPLATE_MODE = "data"}\n')
    (files / "requirements.txt").write_text(REQS)
    build_template(DATA)  # ahead: the server finds them built
    build_template(Template(requirements=REQS))
    args = ("--template", f"data={files / 'data.toml'}",
            "--template", f"reqs={files / 'requirements.txt'}", "--template-pool", "data=1",
            "--template-pool", "reqs=0")
    with running_server(tmp_path_factory, *args, env={"CODEBOX_SERVER_API_KEYS": KEY}) as srv:
        yield srv


def started_at(pid: int) -> float:
    """When a process started, in seconds since boot (to the clock tick): comparable with
    `now`."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK")


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def test_the_capabilities_name_the_templates(server):
    with server.client(KEY) as api:
        caps = api.get("/codebox/capabilities").json()
    assert caps["templates"] == ["data", "reqs"] and "templates" in caps["extensions"]


def test_an_unknown_template_is_a_404_naming_the_templates(server):
    with server.client(KEY) as api:
        response = api.post("/codebox/start", json={"template": "pandas"})
        assert response.status_code == 404
        assert response.json()["detail"] == ("no template 'pandas' on this server; its "
                                             "templates: data, reqs")
        assert api.post("/codebox/start", json={"template": ""}).status_code == 422
    with pytest.raises(CodeBoxError) as failed, \
            CodeBox(api_key=KEY, base_url=server.base_url, template="pandas") as box:
        box.run("1")
    assert failed.value.http_status == 404


def test_a_session_of_a_template_starts_from_a_warm_preloaded_kernel(server):
    with CodeBox(api_key=KEY, base_url=server.base_url, template="data",
                 env={"MINE": "1"}) as box:
        asked = now()
        box.start()
        out = box.run("import os, sys\nprint(tpl_six.__name__, os.environ['TEMPLATE_MODE'], "
                      "os.environ['MINE'], sys.executable.endswith('/bin/python'))")
        assert out.stdout == "six data 1 True\n"
        assert out.execution_count == 1
        pid = kernel_host_pid(lambda code: box.run(code).content)
        assert started_at(pid) < asked - 0.05  # it was in the pool before we asked



def test_pool_sizes_are_per_template(server):
    asked = now()
    with CodeBox(api_key=KEY, base_url=server.base_url, template="reqs") as box:
        assert box.run("import idna, six; print(idna.__name__)").stdout == "idna\n"
        pid = kernel_host_pid(lambda code: box.run(code).content)
        assert started_at(pid) >= asked - 0.02  # --template-pool reqs=0: started for it


def test_a_sandboxed_session_without_template_has_a_warm_pool_too(server):
    asked = now()
    with CodeBox(api_key=KEY, base_url=server.base_url) as box:
        box.start()
        pid = kernel_host_pid(lambda code: box.run(code).content)
        assert started_at(pid) < asked  # started with the server
        assert box.run("tpl_six").error.name == "NameError"


def test_templates_are_refused_with_a_gateway_given_by_url_and_bad_files(tmp_path):
    (tmp_path / "t.txt").write_text("six\n")
    with pytest.raises(ValueError, match="kernelspec per template"):
        ServerSettings(no_auth=True, gateway_url="http://127.0.0.1:9",
                       templates={"t": tmp_path / "t.txt"})
    with pytest.raises(ValueError, match="template name"):
        ServerSettings(no_auth=True, templates={"a b": tmp_path / "t.txt"})
    (tmp_path / "bad.toml").write_text("packages = 1\n")
    for args in (["--template", f"bad={tmp_path / 'bad.toml'}"],
                 ["--template", f"t={tmp_path / 'missing.txt'}"],
                 ["--template", "no-equals-sign"],
                 ["--template", f"t={tmp_path / 't.txt'}", "--template-pool", "other=2"]):
        result = CliRunner().invoke(main, ["serve", "--no-auth", "--port", "0", *args])
        assert result.exit_code == 2, result.output
