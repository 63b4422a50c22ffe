"""A template build runs package code in a sandbox: a package built from source, or imported
by the build's check, cannot change the templates built already, their kernelspecs or the
bytecode cache (and, while imported, nor uv's cache)."""

from __future__ import annotations

import io
import os
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from codebox import CodeBoxError, Template, build_template
from codebox.templates._store import Layout

SIX = Template(packages=["six"], preload=["six as tpl_six"])

PROBE = """
import errno, os
def _try(path):
    try:
        with open(path, "a") as f:
            f.write("# planted")
        return "WROTE"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
_found = " ".join(f"{name}={_try(path)}" for name, path in sorted(TARGETS.items()))
raise SystemExit("PROBE " + _found)
"""


def targets(cache, uv_cache) -> dict[str, str]:
    layout = Layout.under(cache)
    env = layout.env(SIX.id)
    six = next(env.glob("lib/python*/site-packages/six.py"))
    return {"template-file": str(six), "template-new": str(env / "planted.py"),
            "kernelspec": str(layout.kernelspec(SIX.id)),
            "bytecode": str(next((cache / "bytecode").rglob("*.pyc"))),
            "uv-cache": str(uv_cache / "planted")}


def wheel(directory, name: str, code: str) -> None:
    dist = f"{name}-1.0.dist-info"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}.py", code)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    (directory / f"{name}-1.0-py3-none-any.whl").write_bytes(buf.getvalue())


def sdist(directory, name: str, setup_code: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, text in {"setup.py": setup_code,
                           "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                           }.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-1.0/{path}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (directory / f"{name}-1.0.tar.gz").write_bytes(buf.getvalue())


@pytest.fixture()
def local_index(template_cache, tmp_path, monkeypatch):
    build_template(SIX)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    return tmp_path


def probe_result(error: CodeBoxError) -> dict[str, str]:
    line = next(x for x in str(error).splitlines() if "PROBE " in x)
    return dict(item.split("=") for item in line.split("PROBE ", 1)[1].split())


def test_an_import_in_the_build_changes_nothing(local_index, template_cache):
    uv_cache = Path(os.environ["UV_CACHE_DIR"])
    wheel(local_index, "codebox_probe_import",
          f"TARGETS = {targets(template_cache, uv_cache)!r}\n{PROBE}")
    with pytest.raises(CodeBoxError, match="does not import") as failed:
        build_template(Template(packages=["codebox_probe_import"],
                                preload=["codebox_probe_import"]))
    found = probe_result(failed.value)
    assert set(found) == {"template-file", "template-new", "kernelspec", "bytecode", "uv-cache"}
    assert "WROTE" not in found.values(), found


def test_a_package_built_from_source_cannot_change_built_templates(local_index, template_cache):
    found_targets = targets(template_cache, Path(os.environ["UV_CACHE_DIR"]))
    del found_targets["uv-cache"]  # uv's own cache is writable to the builds uv runs
    sdist(local_index, "codebox_probe_sdist", textwrap.dedent(f"""
        TARGETS = {found_targets!r}
        {textwrap.indent(PROBE, '        ').strip()}
    """))
    with pytest.raises(CodeBoxError, match="could not install") as failed:
        build_template(Template(packages=["codebox_probe_sdist"]))
    found = probe_result(failed.value)
    assert set(found) == {"template-file", "template-new", "kernelspec", "bytecode"}
    assert "WROTE" not in found.values(), found
