"""`codebox.integrations.openai_agents`: a sandbox session on a box through the SDK's own
session API (commands, files, snapshots, resume), then a ``SandboxAgent`` run by the SDK's
``Runner`` with the SDK's scripted model, on real LocalBoxes."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from agents import Runner
from agents.run import RunConfig
from agents.sandbox import Manifest, SandboxAgent, SandboxRunConfig
from agents.sandbox.capabilities import Capabilities
from agents.sandbox.entries import File
from agents.sandbox.errors import (
    ExecTimeoutError,
    InvalidManifestPathError,
    WorkspaceReadNotFoundError,
)
from agents.sandbox.manifest import Environment
from agents.sandbox.snapshot import LocalSnapshotSpec, NoopSnapshotSpec
from agents.testing.model import ScriptedModel, assistant_message, function_call

from codebox import LocalBox
from codebox.integrations.openai_agents import (
    CodeboxPython,
    CodeboxSandboxClient,
    CodeboxSandboxSessionState,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def box():
    box = LocalBox()
    yield box
    box.stop()


def test_a_session_runs_commands_and_moves_files_in_its_box(box):
    async def go() -> None:
        client = CodeboxSandboxClient(box=box)
        manifest = Manifest(entries={"docs/readme.md": File(content=b"# hello\n")},
                            environment=Environment(value={"GREETING": "bonjour"}))
        session = await client.create(manifest=manifest, snapshot=NoopSnapshotSpec())
        async with session:
            root = session.state.manifest.root
            assert root == box.working_dir  # the workspace is the box's directory
            assert box.download("docs/readme.md").content == b"# hello\n"
            listed = await session.exec("ls docs && echo $GREETING && pwd")
            assert listed.ok()
            assert listed.stdout.decode().split() == ["readme.md", "bonjour", root]
            failed = await session.exec("cat missing.txt")
            assert failed.exit_code == 1 and b"missing.txt" in failed.stderr
            await session.write(Path("out/data.bin"), io.BytesIO(b"\x00\xff"))
            assert box.download("out/data.bin").content == b"\x00\xff"
            assert (await session.read(Path(f"{root}/out/data.bin"))).read() == b"\x00\xff"
            with pytest.raises(WorkspaceReadNotFoundError):
                await session.read(Path("nope.txt"))
            with pytest.raises(InvalidManifestPathError):
                await session.read(Path("../../etc/passwd"))
            with pytest.raises(ExecTimeoutError):
                await session.exec("sleep 5", timeout=0.5)
            assert (await session.exec("echo still here")).stdout == b"still here\n"
            assert box.run("import os; sorted(os.listdir('docs'))").content == "['readme.md']"
        assert box.status() == "running"  # a given box outlives the session

    asyncio.run(go())


def test_a_session_persists_its_workspace_and_resumes_on_a_new_box(tmp_path):
    async def go() -> None:
        client = CodeboxSandboxClient()  # each session makes (and stops) its own box
        first = await client.create(snapshot=LocalSnapshotSpec(base_path=tmp_path))
        await first.start()
        old_box = first._inner.box
        await first.exec("mkdir -p notes && echo 'remember the milk' > notes/todo.txt")
        payload = json.loads(json.dumps(client.serialize_session_state(first.state)))
        await first.aclose()  # persists the workspace, stops the box
        assert old_box.status() == "stopped"

        state = client.deserialize_session_state(payload)
        assert isinstance(state, CodeboxSandboxSessionState) and state.box_options == {}
        resumed = await client.resume(state)
        async with resumed:
            assert resumed._inner.box is not old_box
            todo = await resumed.exec("cat notes/todo.txt")
            assert todo.stdout == b"remember the milk\n"
            assert resumed.state.manifest.root == resumed._inner.box.working_dir
        assert resumed._inner.box.status() == "stopped"

    asyncio.run(go())


def test_a_session_whose_box_still_runs_is_reattached(box):
    async def go() -> None:
        box.run("kernel_state = 'kept'")
        client = CodeboxSandboxClient(box=box)
        session = await client.create(snapshot=NoopSnapshotSpec())
        await session.start()
        payload = client.serialize_session_state(session.state)
        await session.aclose()
        resumed = await CodeboxSandboxClient().resume(client.deserialize_session_state(payload))
        async with resumed:
            assert resumed._inner.box is box
        assert box.run("kernel_state").content == "'kept'"

    asyncio.run(go())


def test_a_sandbox_agent_works_in_the_box_with_shell_files_and_python():
    model = ScriptedModel([
        [function_call("exec_command", {"cmd": "cat data.csv | wc -l"}, call_id="c1")],
        [function_call("run_python", {"code": (
            "import csv\nrows = list(csv.DictReader(open('data.csv')))\n"
            "total = sum(int(r['n']) for r in rows)\nprint(total)\n"
            "import matplotlib.pyplot as plt\nplt.bar([r['k'] for r in rows], "
            "[int(r['n']) for r in rows]); plt.show()")}, call_id="c2")],
        [function_call("run_python", {"code": "open('total.txt', 'w').write(str(totl))"},
                       call_id="c3")],
        [function_call("run_python", {"code": "open('total.txt', 'w').write(str(total))"},
                       call_id="c4")],
        [function_call("exec_command", {"cmd": "cat total.txt", "yield_time_ms": 10000},
                       call_id="c5")],
        [function_call("exec_command", {"cmd": "sleep 5", "yield_time_ms": 500},
                       call_id="c6")],
        [assistant_message("The total is 6.")],
    ])
    agent = SandboxAgent(
        name="analyst", model=model, instructions="Answer from the data.",
        default_manifest=Manifest(entries={"data.csv": File(content=b"k,n\na,1\nb,2\nc,3\n")}),
        capabilities=[*Capabilities.default(), CodeboxPython(timeout=30)],
    )
    config = RunConfig(tracing_disabled=True, sandbox=SandboxRunConfig(
        client=CodeboxSandboxClient(), snapshot=NoopSnapshotSpec()))

    result = asyncio.run(Runner.run(agent, "What is the total?", run_config=config))
    assert result.final_output == "The total is 6."
    model.assert_complete()
    outputs = {item["call_id"]: item["output"] for call in model.calls[1:]
               for item in call.input if isinstance(item, dict)
               and item.get("type") == "function_call_output"}
    assert "Output:\n4\n" in outputs["c1"]  # the manifest's file is in the box
    text, image = outputs["c2"]
    assert text["text"].startswith("6\n[image 1: PNG")
    assert image["type"] == "input_image" and image["image_url"].startswith(
        "data:image/png;base64,iVBOR")
    assert "NameError: name 'totl' is not defined" in outputs["c3"]  # the agent can fix it
    assert "Output:\n6" in outputs["c5"]  # Python and the shell share the workspace
    assert "timed out" in outputs["c6"]
