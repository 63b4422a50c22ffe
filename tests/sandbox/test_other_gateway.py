"""The ``codebox-sandbox`` kernelspec on a stock Kernel Gateway that only has codebox
installed: the policy reaches the provisioner through the kernel-create request, and a
request cannot bind host paths into a kernelspec that does not trust it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys

import httpx
import pytest

from codebox import CodeBoxError, LocalBox, Sandbox
from codebox.local import _sandbox
from tests.helpers import wait_until
from tests.sandbox.conftest import probe


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stock")
    # Untrusted (the default), with a ceiling of its own.
    _sandbox.write_kernelspec(tmp / "share", policy={"max_processes": 100})
    token = secrets.token_hex(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_gateway", f"--KernelGatewayApp.port={port}",
         "--KernelGatewayApp.ip=127.0.0.1", "--KernelGatewayApp.port_retries=0",
         f"--KernelGatewayApp.auth_token={token}"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
                 JUPYTER_PATH=str(tmp / "share")),
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, "the stock gateway exited"
        try:
            return httpx.get(f"{url}/api", headers={"Authorization": f"token {token}"},
                             trust_env=False, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.1)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_stock_gateway_runs_the_sandbox_with_the_requested_policy(gateway):
    url, token = gateway
    with LocalBox(gateway_url=url, gateway_token=token,
                  sandbox=Sandbox(max_processes=77)) as box:
        out = probe(box, "import os, resource\n"
                         "print(len([p for p in os.listdir('/proc') if p.isdigit()]),"
                         " resource.getrlimit(resource.RLIMIT_NPROC)[0])")
        assert out == "2 77\n"
        box.upload("f.txt", b"through the kernel")
        assert box.download("f.txt").content == b"through the kernel"


@pytest.mark.parametrize("policy, refused", [
    (Sandbox(read_only_paths=["/"], max_processes=10), "read_only_paths"),
    (Sandbox(network=True, max_processes=10), "no network"),
    (Sandbox(max_processes=101), "max_processes up to 100"),
])
def test_an_untrusting_kernelspec_is_a_ceiling(gateway, policy, refused):
    url, token = gateway
    box = LocalBox(gateway_url=url, gateway_token=token, sandbox=policy)
    try:
        with pytest.raises(CodeBoxError) as info:
            box.start()
        assert refused in str(info.value) and info.value.http_status == 403, info.value
    finally:
        box.stop()
