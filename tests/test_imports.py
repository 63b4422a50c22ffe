"""`import codebox` stays light: httpx comes without its command-line client."""

import subprocess
import sys

CHECK = """
import sys
import codebox
assert "httpx._main" not in sys.modules and "rich" not in sys.modules, sorted(sys.modules)
import httpx
assert callable(httpx.main)
from httpx._main import main  # the CLI still imports when asked for
print("ok")
"""


def test_import_codebox_skips_the_httpx_cli() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
