"""A template inside a sandbox: its environment is read-only there, whatever the box tries;
what the box installs stays in the box; its warm kernels are the template's."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from codebox import LocalBox, Sandbox, Template, build_template
from codebox.templates._store import Layout
from tests.helpers import make_wheel
from tests.sandbox.conftest import probe

SIX = Template(packages=["six"], preload=["six as tpl_six"])


@pytest.fixture(scope="module")
def env(template_cache) -> Path:
    build_template(SIX)
    return Layout.under(template_cache).env(SIX.id)


def digest(root: Path) -> str:
    """What is in a directory tree: names, kinds and contents."""
    sha = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        sha.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            sha.update(path.read_bytes())
    return sha.hexdigest()


def test_the_template_is_read_only_inside_a_sandbox(env):
    before = digest(env)
    with LocalBox(template=SIX, sandbox=True) as box:
        assert probe(box, "import sys; print(sys.executable)") == f"{env}/bin/python\n"
        out = probe(box, f"""
import os, shutil
env = {str(env)!r}
site = [os.path.join(env, 'lib', d, 'site-packages') for d in os.listdir(env + '/lib')][0]
attempts = {{
    'append': lambda: open(tpl_six.__file__, 'a').write('# changed'),
    'create': lambda: open(os.path.join(site, 'planted.py'), 'w'),
    'rename': lambda: os.rename(tpl_six.__file__, tpl_six.__file__ + '.bak'),
    'remove': lambda: os.remove(tpl_six.__file__),
    'chmod': lambda: os.chmod(tpl_six.__file__, 0o777),
    'mkdir': lambda: os.mkdir(os.path.join(env, 'planted')),
    'rmtree': lambda: shutil.rmtree(os.path.join(env, 'bin')),
    'symlink': lambda: os.symlink('/tmp', os.path.join(site, 'planted')),
}}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, 'DONE')
    except OSError as exc:
        print(name, 'refused', exc.errno)
""")
        assert "DONE" not in out, out
        assert out.count("refused") == 8
        # pip too installs into the box, not the template (PIP_TARGET).
        assert probe(box, "import os; print(os.environ['PIP_TARGET'])").startswith(
            probe(box, "import os; print(os.environ['HOME'])").strip())
    assert digest(env) == before


def test_a_template_box_sees_the_template_not_codeboxs_environment(env):
    with LocalBox(template=SIX, sandbox=True) as box:
        seen = probe(box, f"import os; print(os.path.exists({sys.prefix!r}))")
        assert seen == ("True\n" if env.is_relative_to(sys.prefix) else "False\n")


def test_install_in_a_sandboxed_template_box_stays_in_that_box(env, tmp_path):
    wheel = make_wheel(tmp_path)
    code = "import codebox_probe_pkg\nprint(codebox_probe_pkg.ANSWER)"
    policy = Sandbox(network=True)  # install's own precondition today; the wheel is local
    with LocalBox(template=SIX, sandbox=policy) as one, \
            LocalBox(template=SIX, sandbox=policy) as other:
        one.upload(wheel.name, wheel.read_bytes())
        one.install(f"./{wheel.name}")
        assert one.run(code).stdout == "42\n"
        assert other.run(code).error.name == "ModuleNotFoundError"
    assert not list(env.rglob("codebox_probe_pkg*"))
