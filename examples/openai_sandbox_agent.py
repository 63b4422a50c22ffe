"""An OpenAI Agents SDK sandbox agent whose sandbox is a box.

    pip install "codebox[openai-agents]"
    python examples/openai_sandbox_agent.py

`CodeboxSandboxClient` makes one box per sandbox session: the manifest's files are written
into it, the SDK's shell tool runs its commands there, and `CodeboxPython` adds
``run_python``, a stateful kernel in the same workspace. With OPENAI_API_KEY set, the model
is OpenAI's (OPENAI_MODEL, default gpt-5-mini); without, the SDK's scripted model replays
the calls a model would make, so the example runs anywhere.
"""

from __future__ import annotations

import asyncio
import os

from agents import Runner
from agents.run import RunConfig
from agents.sandbox import Manifest, SandboxAgent, SandboxRunConfig
from agents.sandbox.capabilities import Capabilities
from agents.sandbox.entries import File
from agents.sandbox.snapshot import NoopSnapshotSpec
from agents.testing.model import ScriptedModel, assistant_message, function_call

from codebox.integrations.openai_agents import CodeboxPython, CodeboxSandboxClient

SALES = b"region,month,revenue\nnorth,jan,120\nnorth,feb,135\nsouth,jan,95\nsouth,feb,88\n"


def scripted_model() -> ScriptedModel:
    """What a model would do: look, compute, fix a mistake, write, answer."""
    return ScriptedModel([
        [function_call("exec_command", {"cmd": "head -3 sales.csv && wc -l sales.csv"},
                       call_id="look")],
        [function_call("run_python", {"code": (
            "import csv\nrows = list(csv.DictReader(open('sales.csv')))\n"
            "by_region = {}\nfor r in rows:\n"
            "    by_region[r['region']] = by_region.get(r['region'], 0) + int(r['revenu'])\n"
        )}, call_id="sum")],
        [function_call("run_python", {"code": (
            "by_region = {}\nfor r in rows:\n"
            "    by_region[r['region']] = by_region.get(r['region'], 0) + int(r['revenue'])\n"
            "open('summary.txt', 'w').write(str(by_region))\nby_region"
        )}, call_id="fix")],
        [function_call("exec_command", {"cmd": "cat summary.txt"}, call_id="check")],
        [assistant_message("North made 255 and south 183; summary.txt has the totals.")],
    ])


async def main() -> None:
    real = bool(os.environ.get("OPENAI_API_KEY"))
    model = os.environ.get("OPENAI_MODEL", "gpt-5-mini") if real else scripted_model()
    agent = SandboxAgent(
        name="analyst",
        model=model,
        instructions="Answer from sales.csv; write the revenue per region to summary.txt.",
        default_manifest=Manifest(entries={"sales.csv": File(content=SALES)}),
        capabilities=[*Capabilities.default(), CodeboxPython(timeout=60)],
    )
    # Each run gets its own box (a LocalBox, or on a server if CODEBOX_API_KEY is set),
    # stopped when the run ends. NoopSnapshotSpec: keep no copy of the workspace after it.
    run_config = RunConfig(tracing_disabled=not real, sandbox=SandboxRunConfig(
        client=CodeboxSandboxClient(), snapshot=NoopSnapshotSpec()))
    result = await Runner.run(agent, "Which region made more revenue?", run_config=run_config)
    for item in result.new_items:
        raw = item.raw_item
        if item.type == "tool_call_item":
            print("->", getattr(raw, "name", "?"), getattr(raw, "arguments", "")[:70])
        elif item.type == "tool_call_output_item":  # its last line: a result or an error
            print("<-", str(item.output).strip().splitlines()[-1][:110])
    print("answer:", result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
