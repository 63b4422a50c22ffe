"""Installs run pip in the kernel's interpreter, names as arguments, failures raised."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codebox import CodeBoxError
from tests.helpers import make_wheel as _wheel

pytestmark = pytest.mark.integration


def test_install_a_local_wheel_and_report_failures(fresh_box, tmp_path, request):
    module = "codebox_conf_" + request.node.callspec.id.replace("-", "_")
    wheel = _wheel(tmp_path, module)
    # Through the box's files: a remote or sandboxed box cannot read the caller's paths.
    fresh_box.upload(wheel.name, wheel.read_bytes())
    try:
        status = fresh_box.install(f"./{wheel.name}")
        assert wheel.name in str(status) and str(status).endswith("installed")
        assert fresh_box.run(f"import {module}; {module}.ANSWER").content == "42"
        with pytest.raises(CodeBoxError) as info:
            fresh_box.install(str(tmp_path / "missing-1.0-py3-none-any.whl"))
        assert "missing-1.0" in str(info.value)  # pip's own message
        for bad in ("--index-url=http://example.invalid", ""):
            with pytest.raises(ValueError):
                fresh_box.install(bad)
        with pytest.raises(ValueError):
            fresh_box.install()
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", module],
                       check=False, capture_output=True)
