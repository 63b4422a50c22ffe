"""Faults heal and deadlines hold: a kernel that vanished from its gateway is reported once
and replaced; a run returns within its timeout plus a bounded grace whatever the kernel
does (stopped, deaf to SIGINT)."""

from __future__ import annotations

import time

import httpx
import pytest

from codebox import LocalBox
from codebox.local._execution import GRACE
from codebox.local._gateway import shared_gateway

pytestmark = pytest.mark.integration

KERNEL_ID = "import os; os.path.basename(get_ipython().config['IPKernelApp']['connection_file'])"


def _delete_kernel(box) -> None:
    address = shared_gateway.current(box.box.settings)
    r = httpx.delete(f"{address.url}/api/kernels/{box.box.kernel_id}", trust_env=False,
                     headers={"Authorization": f"token {address.token}"})
    assert r.status_code == 204


@pytest.mark.parametrize("then", ["run", "restart", "upload"])
def test_a_kernel_deleted_on_the_gateway_is_reported_once_and_replaced(fresh_box, then):
    box = fresh_box
    box.run("state = 'kept?'")
    box.upload("file.txt", b"kept")
    old = box.box.kernel_id
    _delete_kernel(box)
    started = time.monotonic()
    if then == "run":
        out = box.run("print('hello')")
        assert out.error.name == "KernelDiedError" and "state is gone" in out.error.value
    elif then == "restart":
        assert box.restart().status == "restarted"
    else:
        assert box.upload("other.txt", b"new").size == 3  # healed without a word...
        out = box.run("print('hello')")  # ...which the next run says, without running
        assert out.error.name == "KernelDiedError" and out.stdout == ""
    assert time.monotonic() - started < 30
    after = box.run("'state' in dir()")
    assert after.error is None and after.content == "False"
    assert box.box.kernel_id != old
    assert box.download("file.txt").content == b"kept"


@pytest.mark.parametrize("code", [
    "import os, signal\nprint('so far', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)",
    "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('so far', flush=True)\nwhile True: time.sleep(0.05)",
])
def test_a_run_returns_within_its_deadline_whatever_the_kernel_does(code):
    with LocalBox() as box:
        box.run("x = 1")
        started = time.monotonic()
        out = box.run(code, timeout=2)
        took = time.monotonic() - started
        assert took < 2 + GRACE, took
        assert out.error.name == "TimeoutError" and "variables" in out.error.value
        if "SIGSTOP" not in code:  # a stopped process may not flush its output thread
            assert "so far" in out.stdout
        assert box.run("print('next')").stdout == "next\n"


def test_one_boxs_code_history_is_not_readable_from_another():
    with LocalBox() as first, LocalBox() as second:
        first.run("history_marker_7f3a = 1")
        out = second.run("hm = get_ipython().history_manager\nhm.writeout_cache()\n"
                         "len(list(hm.search('*history_' + 'marker_7f3a*', raw=True)))")
        assert out.error is None and out.content == "0"
