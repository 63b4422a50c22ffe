"""The framework adapters on the other kinds of box: a session of a real `codebox serve`
(given, or made from its arguments, and saved in an AutoGen config), and a sandboxed
LocalBox made from the adapters' arguments."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from agents.sandbox.snapshot import NoopSnapshotSpec
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from smolagents.default_tools import FinalAnswerTool
from smolagents.monitoring import AgentLogger, LogLevel

from codebox import CodeBox
from codebox.integrations.autogen import CodeboxCodeExecutor
from codebox.integrations.openai_agents import CodeboxSandboxClient
from codebox.integrations.smolagents import CodeboxExecutor
from tests.server.harness import KEY, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory, "--no-sandbox",
                        env={"CODEBOX_SERVER_API_KEYS": KEY}) as srv:
        yield srv


def test_smolagents_on_a_server_session_made_from_arguments(server):
    executor = CodeboxExecutor(logger=AgentLogger(LogLevel.OFF), api_key=KEY,
                               base_url=server.base_url)
    assert isinstance(executor.box, CodeBox)
    executor.send_tools({"final_answer": FinalAnswerTool()})
    executor("x = 21")
    output = executor("final_answer(x * 2)")
    assert output.is_final_answer and output.output == 42
    executor.cleanup()
    with server.client(KEY) as api:  # the session is gone from the server
        assert api.get(f"/codebox/{executor.box.session_id}/status").status_code == 404


def test_an_autogen_config_reattaches_to_the_same_server_session(server, monkeypatch):
    monkeypatch.setenv("CODEBOX_API_KEY", KEY)  # the key comes from the environment, not
    box = CodeBox(api_key=KEY, base_url=server.base_url)  # from the config
    blocks = [CodeBlock(code="remote = 'same session'", language="python")]

    async def go() -> str:
        executor = CodeboxCodeExecutor(box=box)
        await executor.execute_code_blocks(blocks, CancellationToken())
        config = executor.dump_component()
        assert config.config["base_url"] == server.base_url
        assert KEY not in config.model_dump_json()
        loaded = CodeboxCodeExecutor.load_component(config)
        result = await loaded.execute_code_blocks(
            [CodeBlock(code="print(remote)", language="python")], CancellationToken())
        return result.output

    try:
        assert asyncio.run(go()) == "same session\n"
    finally:
        box.stop()


def test_an_openai_agents_session_on_a_server_box(server):
    async def go() -> None:
        client = CodeboxSandboxClient(api_key=KEY, base_url=server.base_url)
        session = await client.create(snapshot=NoopSnapshotSpec())
        async with session:
            box = session._inner.box
            assert isinstance(box, CodeBox)
            await session.write(Path("in/data.txt"), io.BytesIO(b"over http\n"))
            seen = await session.exec("cat in/data.txt")
            assert seen.stdout == b"over http\n"
        assert box.status() != "running"  # the session stopped the box it made

    asyncio.run(go())


def test_the_adapters_make_sandboxed_boxes():
    executor = CodeboxExecutor(logger=AgentLogger(LogLevel.OFF), sandbox=True)
    try:
        assert executor.box.sandbox is not None
        # The sandbox hides the caller's home; the code still runs.
        assert executor("import os; os.path.exists(os.path.expanduser('~/.cache'))").output == (
            "False")
    finally:
        executor.cleanup()

    async def go() -> None:
        client = CodeboxSandboxClient(sandbox=True)
        session = await client.create(snapshot=NoopSnapshotSpec())
        async with session:
            assert session._inner.box.sandbox is not None
            result = await session.exec("echo $((6 * 7)) > answer.txt && cat answer.txt")
            assert result.stdout == b"42\n"
            assert (await session.read(Path("answer.txt"))).read() == b"42\n"

    asyncio.run(go())
