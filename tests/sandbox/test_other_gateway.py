"""The ``codebox-sandbox`` kernelspec on a stock Kernel Gateway that only has codebox
installed: the policy reaches the provisioner through the kernel-create request, and a
request cannot bind host paths into a kernelspec that does not trust it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from codebox import CodeBoxError, LocalBox, Sandbox
from codebox.local import _sandbox
from tests.helpers import stock_kernel_gateway
from tests.sandbox.conftest import probe


@pytest.fixture(scope="module")
def gateway():
    # A short path: the kernels' unix sockets live under its runtime directory (at most
    # 107 bytes), and pytest's own temporary paths can be longer than that leaves room for.
    tmp = Path(tempfile.mkdtemp(prefix="cb-stock-"))
    # Untrusted (the default), with a ceiling of its own.
    _sandbox.write_kernelspec(tmp / "share", policy={"max_processes": 100})
    with stock_kernel_gateway(tmp, {"JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
                                    "JUPYTER_PATH": str(tmp / "share")}) as url_and_token:
        yield url_and_token
    shutil.rmtree(tmp, ignore_errors=True)


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


def test_an_interrupt_with_nothing_running_is_not_sent(gateway):
    # A stock gateway answers a message-mode interrupt as soon as it has sent it: one sent
    # to an idle box would be taken late, by its next run (made 0.3 s late here, to be sure).
    from tests.sandbox.test_interrupts import BUSY, SLOW_INTERRUPTS

    url, token = gateway
    with LocalBox(gateway_url=url, gateway_token=token,
                  sandbox=Sandbox(max_processes=50)) as box:
        assert box.run(SLOW_INTERRUPTS).error is None
        assert box.interrupt() == "interrupted"
        out = box.run(BUSY)
        assert (out.content, out.error) == ("'done'", None)
        # A run in progress is still interrupted.
        out = box.run("import time\nprint('x', flush=True)\ntime.sleep(30)",
                      on_output=lambda chunk: box.interrupt())
        assert out.stdout == "x\n" and out.error.name == "KeyboardInterrupt"
