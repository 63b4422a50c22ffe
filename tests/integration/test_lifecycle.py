"""Starting and stopping boxes, gateways and kernels; many boxes; installs; settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codebox import CodeBox, CodeBoxError, CodeBoxSettings, LocalBox
from codebox.local._gateway import shared_gateway
from tests.helpers import alive as _alive
from tests.helpers import our_processes, stock_kernel_gateway, wait_until


def test_lazy_start_status_repr_and_idempotent_stop():
    box = LocalBox()
    assert box.status() == "stopped"
    assert box.run("1 + 1").content == "2"  # started on first use
    assert box.status() == "running"
    assert f"id={box.session_id}" in repr(box) and "running" in repr(box)
    kernel = box.kernel_id
    assert box.stop() == "stopped" and box.stop() == "stopped"
    assert box.status() == "stopped"
    assert box.start() == "started" and box.start() == "started"
    assert box.kernel_id != kernel  # a stopped box starts again on a fresh kernel
    assert box.run("'x' in dir()").content == "False"
    box.stop()


def test_default_working_dir_is_private_and_removed_on_stop():
    with LocalBox() as box:
        root = box.working_dir
        assert root and os.path.isdir(root)
        assert box.run("import os; os.getcwd()").content == repr(root)
        box.upload("f.txt", b"1")
    assert not os.path.exists(root)


def test_given_working_dir_is_used_and_kept(tmp_path):
    with LocalBox(working_dir=tmp_path) as box:
        box.upload("kept.txt", b"kept")
        assert box.run("import os; os.getcwd()").content == repr(str(tmp_path))
    assert (tmp_path / "kept.txt").read_bytes() == b"kept"


def test_context_managers_and_from_id():
    with LocalBox() as box:
        assert CodeBox.from_id(box.session_id) is box
    with pytest.raises(CodeBoxError):
        LocalBox.from_id("no-such-session")

    async def main():
        async with LocalBox() as abox:
            assert (await abox.astatus()) == "running"
            return abox
    abox = asyncio.run(main())
    assert abox.status() == "stopped"


def test_stop_deletes_the_kernel_and_the_last_box_ends_the_gateway():
    box = LocalBox()
    box.start()
    pid = box.run("import os; os.getpid()").content
    gateway_pid = shared_gateway.pid
    assert gateway_pid is not None
    box.stop()
    wait_until(lambda: not _alive(int(pid)), timeout=10)
    wait_until(lambda: not _alive(gateway_pid), timeout=10)


OWNER = textwrap.dedent("""
    import sys
    from codebox import LocalBox
    from codebox.local._gateway import shared_gateway
    box = LocalBox()
    kernel_pid = box.run("import os; os.getpid()").content
    print(shared_gateway.pid, kernel_pid, shared_gateway._process.url,
          shared_gateway._process.token, flush=True)
    sys.stdin.read()  # wait to be killed
""")


def _spawn_owner():
    proc = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert len(line) == 4, f"owner failed: {line}"
    return proc, int(line[0]), int(line[1]), line[2], line[3]


def test_gateway_and_kernels_die_with_an_owner_killed_by_sigkill():
    proc, gateway_pid, kernel_pid, _, _ = _spawn_owner()
    assert _alive(gateway_pid) and _alive(kernel_pid)
    proc.kill()
    proc.wait(10)
    wait_until(lambda: not _alive(gateway_pid) and not _alive(kernel_pid), timeout=20)


def test_boxes_in_two_processes_never_share_a_gateway():
    proc, gateway_pid, _, url, token = _spawn_owner()
    try:
        with LocalBox() as box:
            box.start()
            ours = shared_gateway._process
            assert ours.pid != gateway_pid and ours.url != url and ours.token != token
            assert httpx.get(f"{url}/api/kernels", headers={"Authorization": f"token {ours.token}"},
                             trust_env=False).status_code in (401, 403)
            assert url.startswith("http://127.0.0.1:")
    finally:
        proc.kill()
        proc.wait(10)
    wait_until(lambda: not _alive(gateway_pid), timeout=20)


@pytest.fixture()
def stock_gateway(tmp_path):
    """A Kernel Gateway started by hand in another directory, stock settings."""
    with stock_kernel_gateway(tmp_path, {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}) \
            as url_and_token:
        yield url_and_token


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_existing_gateway_spawns_nothing_and_files_go_through_the_kernel(stock_gateway, flavour):
    url, token = stock_gateway
    spawned_before = shared_gateway.pid
    box = LocalBox(gateway_url=url, gateway_token=token)

    async def exercise():
        await box.astart()
        assert (await box.arun("21 * 2")).content == "42"
        await box.aupload("sub/f.bin", b"\x00\x01")
        assert [f.name for f in await box.alist_files()] == ["sub/f.bin"]
        assert (await box.adownload("sub/f.bin")).content == b"\x00\x01"
        return await box.arun("import os; os.getcwd()")

    if flavour == "sync":
        box.start()
        assert box.run("21 * 2").content == "42"
        box.upload("sub/f.bin", b"\x00\x01")
        assert [f.name for f in box.list_files()] == ["sub/f.bin"]
        assert box.download("sub/f.bin").content == b"\x00\x01"
        cwd = box.run("import os; os.getcwd()").content
    else:
        cwd = asyncio.run(exercise()).content
    assert shared_gateway.pid == spawned_before  # nothing spawned for this box
    assert "codebox-" in cwd  # a temporary directory the kernel made
    root = cwd.strip("'")
    # Stock gateways limit IOPub: the result says output was dropped, never hides it.
    big = box.run("print('z' * 5_000_000)")
    assert big.truncated and len(big.stdout) < 5_000_000
    box.stop()
    assert not os.path.exists(root)  # the kernel removed its own directory


def test_eight_boxes_from_one_event_loop():
    async def one(i):
        async with LocalBox() as box:
            await box.arun(f"me = {i}")
            outs = [await box.arun("me * 10") for _ in range(3)]
            return {o.content for o in outs}

    async def main():
        return await asyncio.gather(*(one(i) for i in range(8)))

    assert asyncio.run(main()) == [{str(i * 10)} for i in range(8)]


def test_eight_boxes_from_eight_threads():
    def one(i):
        with LocalBox() as box:
            box.run(f"me = {i}")
            return {box.run("me * 10").content for _ in range(3)}

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [{str(i * 10)} for i in range(8)]


def test_each_box_takes_its_own_settings():
    a = LocalBox(settings=CodeBoxSettings(output_limit=10))
    b = LocalBox(settings=CodeBoxSettings())
    try:
        assert a.run("print('q' * 50)").truncated
        assert not b.run("print('q' * 50)").truncated
    finally:
        a.stop()
        b.stop()


def _boxes_processes() -> list[tuple[int, str]]:
    """This run's gateways and kernels (not the servers or databases other tests share)."""
    return [(pid, cmd) for pid, cmd in our_processes()
            if any(part in cmd for part in ("_gateway_app", "kernel", "bwrap"))]


def test_no_process_is_left_after_all_boxes_stop():
    with LocalBox() as box:
        box.run("1")
    wait_until(lambda: not _boxes_processes(), timeout=15)


def test_a_gateway_reported_unreachable_is_replaced_only_if_it_refuses_connections():
    with LocalBox() as box:
        box.run("state = 1")
        pid = shared_gateway.pid
        address = shared_gateway.current(box.settings)
        # A live gateway (a connection reset by chance) keeps its kernels.
        assert shared_gateway.current(box.settings, refused=address) == address
        assert shared_gateway.pid == pid and box.run("state").content == "1"
        # A killed one refuses before it can be reaped: replaced at once either way. (What
        # the box reports is a refusal it met: wait for that, not only for the zombie.)
        proc = shared_gateway._process
        assert proc is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(proc.refuses, timeout=10)
        new = shared_gateway.current(box.settings, refused=address)
        assert new.generation == address.generation + 1 and new.url != address.url
        assert shared_gateway.pid not in (None, pid)
        assert box.run("state").error.name == "KernelDiedError"
        assert box.run("print('back')").stdout == "back\n"


def test_a_dead_gateway_is_replaced_and_the_box_says_its_state_is_gone():
    with LocalBox() as box:
        box.run("state = 1")
        old_pid = shared_gateway.pid
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: not _alive(old_pid), timeout=10)
        lost = box.run("state")
        assert lost.error is not None and lost.error.name == "KernelDiedError"
        assert box.run("'state' in dir()").content == "False"  # a new gateway, a new kernel
        assert shared_gateway.pid not in (None, old_pid)
        assert box.run("print('back')").stdout == "back\n"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_box_that_fails_to_start_holds_no_kernel_and_no_gateway(flavour):
    assert shared_gateway.pid is None, "another box holds a gateway"
    box = LocalBox(kernel_name="codebox-no-such-kernel")
    with pytest.raises(CodeBoxError, match="start a kernel"):
        if flavour == "sync":
            box.run("1")
        else:
            asyncio.run(box.arun("1"))
    # the gateway it spawned went with it: nothing holds it
    assert box.status() == "stopped" and shared_gateway.pid is None
