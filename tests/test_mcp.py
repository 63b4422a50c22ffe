"""The MCP server, started as `python -m codebox.integrations.mcp` and driven by the official MCP
client over stdio."""

from __future__ import annotations

import base64
import os
import sys
import uuid

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.helpers import our_processes, wait_until

pytestmark = pytest.mark.integration

TOOL_NAMES = ["run_python", "run_shell", "upload_file", "download_file", "list_files",
              "remove_file", "install_packages"]


def test_a_session_over_stdio_gets_one_box_and_leaves_nothing_behind(tmp_path):
    # Our own marker: the server, its gateway and its kernels carry it, nothing else does.
    marker = uuid.uuid4().hex
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "codebox.integrations.mcp"], cwd=str(tmp_path),
        env={"CODEBOX_TEST_RUN": marker, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    seen: dict = {}

    async def session() -> None:
        async with Client(params, read_timeout_seconds=60) as client:
            tools = (await client.list_tools()).tools
            seen["tools"] = {t.name: t for t in tools}
            seen["processes_during"] = our_processes(marker)
            call = client.call_tool
            seen["set"] = await call("run_python", {"code": "x = 41\nprint('x is set')"})
            seen["get"] = await call("run_python", {"code": "x + 1"})
            seen["plot"] = await call("run_python", {
                "code": "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()\n1/0"})
            seen["up"] = await call("upload_file", {
                "file_name": "d/blob.bin", "content": base64.b64encode(b"\x00\xff").decode(),
                "encoding": "base64"})
            seen["text_up"] = await call("upload_file", {"file_name": "t.txt", "content": "hi"})
            seen["down"] = await call("download_file", {"file_name": "d/blob.bin"})
            seen["down_text"] = await call("download_file", {"file_name": "t.txt"})
            seen["list"] = await call("list_files", {})
            seen["shell"] = await call("run_shell", {"command": "cat ../t.txt", "cwd": "d"})
            seen["remove"] = await call("remove_file", {"file_name": "d"})
            seen["missing"] = await call("download_file", {"file_name": "nope"})
            seen["install"] = await call("install_packages",
                                         {"package_names": ["not a requirement!!"]})

    anyio.run(session)

    assert list(seen["tools"]) == TOOL_NAMES
    schema = seen["tools"]["upload_file"].input_schema
    assert schema["required"] == ["file_name", "content"]
    assert schema["properties"]["encoding"]["enum"] == ["text", "base64"]
    assert "description" in schema["properties"]["file_name"]

    assert seen["set"].content[0].text == "x is set\n" and not seen["set"].is_error
    assert seen["get"].content[0].text == "42\n"  # one kernel for the whole session
    plot = seen["plot"]
    assert plot.is_error and plot.content[0].text.endswith("ZeroDivisionError: division by zero")
    assert plot.content[1].type == "image" and plot.content[1].mime_type == "image/png"
    assert base64.b64decode(plot.content[1].data)[:4] == b"\x89PNG"
    assert seen["up"].content[0].text == "Wrote d/blob.bin (2 bytes)."
    down = seen["down"].content
    assert "binary file of 2 bytes" in down[0].text
    assert base64.b64decode(down[1].resource.blob) == b"\x00\xff"
    assert seen["down_text"].content[0].text == "t.txt (2 bytes):\nhi"
    assert seen["list"].content[0].text.splitlines() == ["d/blob.bin (2 bytes)", "t.txt (2 bytes)"]
    assert seen["shell"].content[0].text == "hi\n[exit code 0]"
    assert seen["remove"].content[0].text == "Removed d." and not seen["remove"].is_error
    assert seen["missing"].is_error and "nope" in seen["missing"].content[0].text
    assert seen["install"].is_error

    # The box was made on the first call, not before; at the end of the session the
    # server, its gateway and its kernel are all gone.
    assert len(seen["processes_during"]) == 1, seen["processes_during"]
    wait_until(lambda: not our_processes(marker), timeout=20)
