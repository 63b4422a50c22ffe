"""The ``codebox`` command: refusing unsafe settings, ``--no-auth`` on loopback, and
stopping on SIGINT/SIGTERM with every kernel and the gateway gone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import codebox
from tests.helpers import wait_until
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.integration


def _codebox(*args: str, **kwargs) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("codebox")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "codebox.cli"]
    return subprocess.run([*command, *args], check=False, capture_output=True, text=True,
                          timeout=60, **kwargs)


def test_version_and_help():
    assert _codebox("--version").stdout.strip() == f"codebox, version {codebox.__version__}"
    help_text = _codebox("serve", "--help").stdout
    for option in ("--host", "--port", "--api-key", "--no-auth", "--gateway-url",
                   "--gateway-token"):
        assert option in help_text


@pytest.mark.parametrize("args, message", [
    ((), "no API key"),
    (("--no-auth", "--host", "0.0.0.0"), "loopback"),
    (("--no-auth", "--api-key", "k"), "not both"),
])
def test_unsafe_settings_are_refused_before_anything_starts(args, message):
    proc = _codebox("serve", "--port", "0", *args, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and message in proc.stderr
    assert "listening" not in proc.stdout


def test_no_auth_serves_loopback_and_sigint_stops_everything(tmp_path):
    server = ServerProcess("--no-auth", log_dir=tmp_path)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with server.client(None) as api:
            sid = api.get("/codebox/start").json()["id"]
            assert api.post(f"/codebox/{sid}/run", json={"code": "1 + 1"}).json()["content"] == "2"
        assert any("_gateway_app" in cmd for _, cmd in server.leftovers())
        assert server.stop(signal.SIGINT) == 0
        wait_until(lambda: not server.leftovers(), timeout=15)
    finally:
        server.kill()


def test_sigterm_mid_run_stops_the_server_its_kernels_and_gateway(tmp_path):
    server = ServerProcess("--api-key", "k", "--gateway-token", "", log_dir=tmp_path,
                           env={"CODEBOX_SERVER_SHUTDOWN_TIMEOUT": "2"})
    try:
        with server.client("k") as api:
            sids = [api.get("/codebox/start").json()["id"] for _ in range(2)]
            with api.stream("POST", f"/codebox/{sids[0]}/run/stream",
                            json={"code": "print('go', flush=True)\nimport time\n"
                                  "time.sleep(120)"}) as r:
                assert json.loads(next(r.iter_lines()))["content"] == "go\n"
                kernels = [pid for pid, cmd in server.leftovers() if "ipykernel" in cmd]
                assert len(kernels) >= 2
                assert server.stop(signal.SIGTERM) == 0
        wait_until(lambda: not server.leftovers(), timeout=15)
        assert "Application shutdown complete" in server.log()
    finally:
        server.kill()


def test_the_entry_point_is_installed():
    assert shutil.which("codebox") or Path(sys.executable).with_name("codebox").exists()
