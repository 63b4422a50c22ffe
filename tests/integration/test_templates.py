"""Templates built for real (uv, the host's index, a sandboxed build) and boxes started
from them on the spawned gateway: reuse, concurrent builds, failures, install isolation,
warm pools per template."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codebox import (
    CodeBoxError,
    CodeBoxSettings,
    LocalBox,
    Template,
    abuild_template,
    build_template,
)
from codebox.local._gateway import shared_gateway
from codebox.templates import list_templates
from codebox.templates._build import ensure
from codebox.templates._store import Layout
from tests.helpers import make_wheel, wait_until

SIX = Template(packages=["six"], preload=["six as tpl_six"])
"""The template most tests share: small, and its preload binds a name."""


@pytest.fixture(scope="module")
def six(template_cache):
    build_template(SIX)
    return Layout.under(template_cache)


def fresh_template() -> Template:
    """A template no test built yet (its env makes it another template)."""
    return Template(packages=["six"], env={"CODEBOX_TEST_BUILD": uuid.uuid4().hex})


def template_pool(template_id: str) -> dict | None:
    proc = shared_gateway._process
    assert proc is not None
    state = httpx.get(f"{proc.url}/codebox/pool", trust_env=False, timeout=10,
                      headers={"Authorization": f"token {proc.token}"}).json()
    return next((p for p in state["pools"] if p["template"] == template_id), None)


def warm_kernel_of(template_id: str) -> str:
    return wait_until(lambda: ((template_pool(template_id) or {}).get("warm") or [None])[0],
                      timeout=120, interval=0.1)


# -- building ----------------------------------------------------------------------------


def test_a_second_build_reuses_the_first(six):
    env = six.env(SIX.id)
    before = env.stat()
    built, made = ensure(SIX)
    assert not made and built.path == str(env)
    assert env.stat().st_ino == before.st_ino and env.stat().st_mtime == before.st_mtime
    # The same content spelt otherwise is the same template, built already.
    assert build_template(Template(requirements="Six  # the one\n", preload=["six  as tpl_six"])) \
        == SIX.id
    listed = {t.id: t for t in list_templates()}
    assert listed[SIX.id].size > 10_000_000 and listed[SIX.id].files > 1000
    assert listed[SIX.id].last_used >= listed[SIX.id].built
    # Read-only: nothing can be added to its directories (root aside: it ignores modes).
    site = next(env.glob("lib/python*/site-packages"))
    assert not site.stat().st_mode & 0o222
    # Compiled at build, into the machine's bytecode cache: a pyc valid whatever the
    # source's timestamp (flags: hash-based, unchecked), linked from there.
    pyc = next((site / "__pycache__").glob("six.*.pyc"))
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01
    assert pyc.stat().st_nlink >= 2


def test_concurrent_builds_in_threads_build_once(template_cache):
    template = fresh_template()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure(template), range(4)))
    assert sorted(made for _, made in results) == [False, False, False, True]
    assert len({built.built for built, _ in results}) == 1
    envs = Layout.under(template_cache).root / "envs"
    assert [p.name for p in envs.iterdir() if template.id in p.name] == [template.id]


def test_concurrent_builds_in_processes_build_once(template_cache):
    template = fresh_template()
    script = ("import json, sys\nfrom codebox import Template\n"
              "from codebox.templates._build import ensure\n"
              "print(json.dumps(ensure(Template.model_validate_json(sys.argv[1]))[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", script, template.model_dump_json()],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out))
    assert sorted(outcomes) == [False, False, True]


def test_async_build(six):
    assert asyncio.run(abuild_template(SIX)) == SIX.id


def test_a_failed_build_says_why_and_leaves_nothing(template_cache):
    bad = Template(packages=["codebox-no-such-package-zq"])
    with pytest.raises(CodeBoxError) as failed:
        build_template(bad)
    message = str(failed.value)
    assert "codebox-no-such-package-zq" in message and "not found" in message  # uv's words
    root = Layout.under(template_cache).root
    assert not [p for p in root.rglob("*") if bad.id in p.name]


def test_a_preload_that_does_not_import_fails_the_build(template_cache):
    bad = Template(packages=["six"], preload=["six", "codebox_no_such_module"])
    with pytest.raises(CodeBoxError, match=r"ModuleNotFoundError.*codebox_no_such_module"):
        build_template(bad)
    root = Layout.under(template_cache).root
    assert not [p for p in root.rglob("*") if bad.id in p.name]


# -- boxes of a template -------------------------------------------------------------------


def test_a_plain_box_runs_the_templates_python_with_its_preload(six):
    with LocalBox(template=SIX) as box:
        out = box.run("import sys\nprint(sys.executable)\nprint(tpl_six.PY3)")
        assert out.stdout == f"{six.env(SIX.id)}/bin/python\nTrue\n"
        assert box.shell("python -c 'import six; print(six.__name__)'").stdout == "six\n"
        box.restart()  # the preload runs again
        assert box.run("tpl_six.__name__").content == "'six'"


def test_install_adds_to_that_box_only(six, tmp_path):
    wheel = make_wheel(tmp_path)
    code = "import codebox_probe_pkg\nprint(codebox_probe_pkg.ANSWER)"
    with LocalBox(template=SIX) as one, LocalBox(template=SIX) as other:
        one.install(str(wheel))
        assert one.run(code).stdout == "42\n"
        assert one.shell(["python", "-c", code]).stdout == "42\n"
        assert other.run(code).error.name == "ModuleNotFoundError"
        one.restart()  # the box keeps what it installed
        assert one.run(code).stdout == "42\n"
    with LocalBox(template=SIX) as later:
        assert later.run(code).error.name == "ModuleNotFoundError"
    assert not list(six.env(SIX.id).rglob("codebox_probe_pkg*"))


def test_a_further_box_takes_a_warm_kernel_that_has_run_the_preload(six):
    with LocalBox(template=SIX) as first:  # asks for the template's pool: it is made
        first.start()
        pooled = warm_kernel_of(SIX.id)
        with LocalBox() as plain:  # another pool: no kernel of the template
            plain.start()
            assert plain.kernel_id != pooled
            assert plain.run("tpl_six").error.name == "NameError"
        with LocalBox(template=SIX) as second:
            second.start()
            assert second.kernel_id == pooled
            # Bound before the box ran anything: this is the kernel's first execution.
            out = second.run("tpl_six.__name__")
            assert (out.content, out.execution_count) == ("'six'", 1)


def test_a_template_on_a_gateway_given_by_url_is_its_kernelspec_there():
    box = LocalBox(template=SIX, gateway_url="http://127.0.0.1:9")
    assert box._config().kernel_name == SIX.kernel_name  # nothing built for it here
    with pytest.raises(CodeBoxError, match="gateway codebox spawns"):
        LocalBox(template=SIX, gateway_url="http://127.0.0.1:9", sandbox=True)
    with pytest.raises(TypeError, match="Template"):
        LocalBox(template="six")  # type: ignore[arg-type]


def test_a_template_from_another_cache_than_the_gateways_first_box(six, tmp_path):
    assert shared_gateway.pid is None, "another box holds a gateway"
    with LocalBox(settings=CodeBoxSettings(cache_dir=tmp_path)) as first:
        first.start()  # spawns the gateway, with a template cache of its own
        with LocalBox(template=SIX) as box:
            assert box.run("tpl_six.__name__").content == "'six'"


def another_python() -> tuple[str, str]:
    """An interpreter uv finds on this machine, of another version than ours if there is
    one (else ours, named by its path): its path and full version."""
    from codebox.templates._build import uv_binary

    listed = subprocess.run([uv_binary(), "python", "list", "--only-installed"],
                            capture_output=True, text=True, timeout=60, check=False).stdout
    candidates = [line.split()[1] for line in listed.splitlines() if len(line.split()) >= 2]
    ours = "{}.{}.{}".format(*sys.version_info[:3])
    found = []
    for path in [*candidates, sys.executable]:
        probe = subprocess.run(
            [path, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True, timeout=60, check=False)
        if probe.returncode == 0:
            found.append((path, probe.stdout.strip()))
    return next(((p, v) for p, v in found if v != ours), found[-1])


def test_python_names_the_interpreter(template_cache):
    path, version = another_python()
    template = Template(packages=["six"], python=path)
    build_template(template)
    with LocalBox(template=template, sandbox=True) as box:
        out = box.run("import platform, six\nprint(platform.python_version())")
        assert out.stdout == f"{version}\n"
    with pytest.raises(CodeBoxError, match=r"cannot find Python '3\.99'"):
        build_template(Template(python="3.99"))
