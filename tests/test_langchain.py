"""The LangChain tools, invoked through LangChain's own API on a real LocalBox."""

from __future__ import annotations

import asyncio
import re

import pytest
from langchain_core.messages import ToolMessage
from pydantic import ValidationError

from codebox import LocalBox
from codebox.integrations.langchain import CodeBoxToolkit, codebox_tools
from codebox.integrations.tools import TOOLS, ToolResult

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tools():
    box = LocalBox()
    toolkit = CodeBoxToolkit(box=box)
    yield {tool.name: tool for tool in toolkit.get_tools()}
    box.stop()


def test_the_toolkit_offers_every_tool_with_its_schema():
    box = LocalBox()  # never started: making tools starts nothing
    tools = codebox_tools(box, names=("run_python", "upload_file"))
    assert [t.name for t in tools] == ["run_python", "upload_file"]
    assert tools[1].args["encoding"]["enum"] == ["text", "base64"]
    assert tools[0].description == TOOLS["run_python"].description
    assert box.status() == "stopped"
    with pytest.raises(ValueError, match="unknown tool"):
        codebox_tools(box, names=("nope",))


def test_tools_share_one_box_and_answer_with_text(tools):
    assert tools["upload_file"].invoke({"file_name": "in/n.txt", "content": "20"}) == (
        "Wrote in/n.txt (2 bytes).")
    assert tools["run_python"].invoke({"code": "n = int(open('in/n.txt').read())\nn + 1"}) == "21\n"
    assert tools["download_file"].invoke({"file_name": "in/n.txt"}) == "in/n.txt (2 bytes):\n20"
    assert "in/n.txt (2 bytes)" in tools["list_files"].invoke({})
    assert tools["run_shell"].invoke({"command": "cat n.txt", "cwd": "in"}) == (
        "20\n[exit code 0]")
    assert tools["remove_file"].invoke({"file_name": "in/n.txt"}) == "Removed in/n.txt."
    failed = tools["run_python"].invoke({"code": "n / 0"})
    assert "ZeroDivisionError: division by zero" in failed and "----> 1 n / 0" in failed


def test_a_tool_call_gives_a_tool_message_with_the_result_as_artifact(tools):
    call = {"type": "tool_call", "id": "call_7", "name": "run_python",
            "args": {"code": "import matplotlib.pyplot as plt\nplt.plot([3, 1]); plt.show()"}}
    message = tools["run_python"].invoke(call)
    assert isinstance(message, ToolMessage) and message.tool_call_id == "call_7"
    assert isinstance(message.artifact, ToolResult)
    assert message.artifact.output.images  # the whole CodeBoxOutput, nothing cut
    text, image = message.content
    # The figure's alt text comes along where the box keeps the display's whole bundle.
    assert text["type"] == "text"
    assert re.fullmatch(r"\[image 1: PNG, attached(: <Figure size \d+x\d+ with 1 Axes>)?\]\n",
                        text["text"])
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


def test_async_invocation_and_argument_validation(tools):
    async def go() -> str:
        return await tools["run_python"].ainvoke({"code": "print('async', n)"})

    assert asyncio.run(go()) == "async 20\n"
    with pytest.raises(ValidationError):
        tools["run_python"].invoke({"source": "1"})
    assert "install_packages failed" in tools["install_packages"].invoke(
        {"package_names": ["not a requirement!!"]})
