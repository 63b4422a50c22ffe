"""The sandboxed head start: the first sandboxed kernel of a spawned gateway is launched
before the gateway's imports, with the policy, directories and bwrap command the sandbox
provisioner would use, and the provisioner adopts it only when they are the same."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from codebox import LocalBox, Sandbox
from codebox.local import _head_start, _sandbox
from codebox.local._gateway import shared_gateway
from tests.helpers import alive, our_processes, wait_until
from tests.sandbox.conftest import pool_state, probe
from tests.server.harness import ServerProcess


def test_the_first_sandboxed_box_runs_on_the_early_kernel_with_its_limits():
    assert shared_gateway.pid is None, "another box holds a gateway"
    box = LocalBox(sandbox=Sandbox(memory_mb=600))
    try:
        assert probe(box, "import os\nprint(os.getpid() < 10)") == "True\n"  # own pid ns
        assert pool_state()["head_start"] == "adopted"
        assert probe(box, "import subprocess\nprint(subprocess.run(['cat'], timeout=30)"
                          ".returncode)") == "0\n"  # stdin closed: no wait forever
        out = box.run("hog = bytearray(700 * 1024 * 1024)", timeout=60)
        assert out.error is not None and out.error.name == "MemoryError", out.error
        box.restart()
        assert probe(box, "print(1 + 1)") == "2\n"
    finally:
        box.stop()
    # (A `codebox serve` of other tests, still running, keeps warm kernels of its own.)
    served = {pid for server in ServerProcess.live for pid, _ in server.leftovers()}
    assert not [cmd for pid, cmd in our_processes()
                if pid not in served and ("ipykernel" in cmd or "bwrap" in cmd)]


@pytest.fixture()
def sandbox_kernelspec(monkeypatch):
    """A trusted codebox-sandbox kernelspec and a runtime dir, as a spawned gateway has
    (a short path: the kernels' unix sockets live under it)."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="cb-"))
    _sandbox.write_kernelspec(runtime_dir, trusted=True)
    monkeypatch.setenv("JUPYTER_PATH", str(runtime_dir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime_dir))
    yield runtime_dir
    shutil.rmtree(runtime_dir, ignore_errors=True)


def _start(runtime_dir, head, policy) -> tuple[int, str]:
    """Start the head start's kernel id with ``policy`` through the real provisioner;
    return the pid the provisioner holds and the policy the kernel reports."""
    async def main() -> tuple[int, str]:
        km = AsyncKernelManager(kernel_name=_sandbox.KERNEL_NAME, connection_file=str(
            runtime_dir / f"kernel-{head.kernel_id}.json"))
        head.arm(km)
        env = {**os.environ, _sandbox.POLICY_ENV: json.dumps(policy, sort_keys=True)}
        await km.start_kernel(kernel_id=head.kernel_id, env=env,
                              extra_arguments=list(_head_start.IPYKERNEL_ARGUMENTS))
        try:
            client = km.client()
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=60)
                reply = await client.execute_interactive(
                    "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])",
                    timeout=30, output_hook=outputs.append)
                assert reply["content"]["status"] == "ok"
            finally:
                client.stop_channels()
            return km.provisioner.pid, "".join(
                m["content"].get("text", "") for m in outputs).strip()
        finally:
            await km.shutdown_kernel(now=True)

    outputs: list = []
    return asyncio.run(main())


def test_the_provisioner_adopts_the_early_kernel_of_the_same_policy(sandbox_kernelspec):
    head = _head_start.SandboxHeadStart({"memory_mb": 512}, str(sandbox_kernelspec))
    assert head.process is not None
    early = head.process.pid
    pid, limit = _start(sandbox_kernelspec, head, {"memory_mb": 512})
    assert (pid, head.outcome) == (early, "adopted")
    assert int(limit) == 512 * 1024 * 1024
    assert not alive(early)
    assert not head.box_dir.exists()  # shutting the kernel down removed it


def test_the_provisioner_kills_the_early_kernel_of_another_policy(sandbox_kernelspec):
    head = _head_start.SandboxHeadStart({"memory_mb": 512}, str(sandbox_kernelspec))
    assert head.process is not None
    early = head.process.pid
    pid, limit = _start(sandbox_kernelspec, head, {"memory_mb": 256})
    assert head.outcome == "the policy differs"
    assert pid != early and not alive(early)
    assert int(limit) == 256 * 1024 * 1024  # the kernel of the asked-for policy


def test_an_early_kernel_that_died_is_replaced_by_a_kernel_that_answers(sandbox_kernelspec):
    head = _head_start.SandboxHeadStart({"memory_mb": 512}, str(sandbox_kernelspec))
    assert head.process is not None
    early = head.process.pid
    # Dead after binding its sockets: they stay in its ipc dir, where the new kernel binds.
    sockets = [inside for inside, _ in head.launch.sockets]
    wait_until(lambda: all(os.path.exists(s) for s in sockets), timeout=60)
    os.killpg(early, signal.SIGKILL)
    head.process.wait(10)
    pid, limit = _start(sandbox_kernelspec, head, {"memory_mb": 512})
    assert head.outcome == "the early kernel had exited"
    assert pid != early and int(limit) == 512 * 1024 * 1024


def test_an_early_sandboxed_kernel_nobody_asks_for_leaves_nothing(sandbox_kernelspec):
    head = _head_start.SandboxHeadStart({}, str(sandbox_kernelspec))
    assert head.process is not None
    early = head.process.pid
    head.settle()
    assert not alive(early)
    assert not head.box_dir.exists()
    assert all(not os.path.exists(d) for d in head.launch.cgroups.dirs)
