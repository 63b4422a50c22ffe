"""The head start of a spawned gateway's first kernel (`codebox.local._head_start`): launched
before the gateway's imports, adopted by the kernel manager only when it is exactly what
the manager would launch, and killed otherwise. Real kernels, real jupyter_client managers."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from codebox import CodeBoxSettings, LocalBox
from codebox.local import _head_start
from codebox.local._gateway import shared_gateway
from tests.helpers import alive, our_processes
from tests.integration.test_pool import pool_state


def test_the_first_box_runs_on_the_kernel_launched_before_the_gateway_was_ready():
    assert shared_gateway.pid is None, "another box holds a gateway"
    box = LocalBox(settings=CodeBoxSettings(pool_size=1))
    try:
        assert box.run("x = 20\nx + 1").content == "21"
        assert pool_state()["head_start"] == "adopted"
        # Its stdin is closed, as a kernel launched by jupyter_client has it: no wait forever.
        assert box.run("import subprocess\nsubprocess.run(['cat'], timeout=30).returncode",
                       timeout=60).content == "0"
        box.restart()  # a restart launches the usual way, on the same connection
        assert box.run("1 + 1").content == "2"
    finally:
        box.stop()
    assert not [cmd for _, cmd in our_processes() if "ipykernel" in cmd]


async def _kernel_answers(km: AsyncKernelManager) -> None:
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
    finally:
        client.stop_channels()


def _manager(tmp_path: Path, kernel_id: str) -> AsyncKernelManager:
    return AsyncKernelManager(kernel_name="python3",
                              connection_file=str(tmp_path / f"kernel-{kernel_id}.json"))


def test_a_manager_launching_the_same_kernel_adopts_the_process(tmp_path):
    head = _head_start.HeadStart("python3", str(tmp_path))
    assert head.process is not None
    early = head.process.pid

    async def main() -> int:
        km = _manager(tmp_path, head.kernel_id)
        head.arm(km)
        # What the gateway's kernel manager passes: the environment with KERNEL_GATEWAY.
        await km.start_kernel(env=dict(head.env),
                              extra_arguments=list(_head_start.IPYKERNEL_ARGUMENTS))
        try:
            assert km.provisioner.pid == early
            await _kernel_answers(km)
            info = json.loads(Path(km.connection_file).read_text())
            assert info["shell_port"] == head.info["shell_port"]
            await km.restart_kernel(now=True)  # launched the usual way: a new process
            assert km.provisioner.pid != early
            await _kernel_answers(km)
        finally:
            await km.shutdown_kernel(now=True)
        return early

    asyncio.run(main())
    assert head.outcome == "adopted"
    assert not alive(early)


def test_a_manager_launching_another_kernel_kills_the_early_one(tmp_path):
    head = _head_start.HeadStart("python3", str(tmp_path))
    assert head.process is not None
    early = head.process.pid

    async def main() -> None:
        km = _manager(tmp_path, head.kernel_id)
        head.arm(km)
        await km.start_kernel(env={**head.env, "ANOTHER": "1"},
                              extra_arguments=list(_head_start.IPYKERNEL_ARGUMENTS))
        try:
            assert km.provisioner.pid != early
            await _kernel_answers(km)
        finally:
            await km.shutdown_kernel(now=True)

    asyncio.run(main())
    assert head.outcome == "the environment differs in ['ANOTHER']"
    assert not alive(early)
    assert not os.path.exists(head.connection_file)


def test_an_early_kernel_nobody_asks_for_is_killed(tmp_path):
    head = _head_start.HeadStart("python3", str(tmp_path))
    assert head.process is not None
    early = head.process.pid
    head.settle()
    assert head.outcome == "the kernel manager never asked for it"
    assert not alive(early)
    assert list(tmp_path.iterdir()) == []


def test_no_head_start_without_a_pool_or_a_plain_kernelspec(tmp_path, monkeypatch):
    assert _head_start.launch({"pool_size": 0}) is None
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert _head_start.launch({"pool_size": 1, "kernel_name": "no-such-kernel"}) is None
    assert list(tmp_path.iterdir()) == []


def test_the_command_is_formatted_as_jupyter_client_formats_it(tmp_path):
    from jupyter_client.kernelspec import KernelSpec

    argv = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}", "{resource_dir}",
            "{unknown}"]
    km = AsyncKernelManager(connection_file=str(tmp_path / "k.json"))
    km._kernel_spec = KernelSpec(argv=argv, resource_dir=str(tmp_path), language="python")
    km._launch_args = {}
    ours = _head_start._command({"argv": argv, "resource_dir": str(tmp_path)},
                                os.path.realpath(tmp_path / "k.json"))
    assert ours == km.format_kernel_cmd(list(_head_start.IPYKERNEL_ARGUMENTS))
