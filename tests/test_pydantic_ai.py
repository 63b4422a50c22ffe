"""pydantic-ai over ``codebox mcp``, as docs/integrations/pydantic-ai.md shows it: a real
pydantic-ai ``Agent`` whose model is a scripted function, its tools served over stdio."""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import our_processes, wait_until

pytestmark = pytest.mark.integration


def test_a_pydantic_ai_agent_uses_the_kernel_over_mcp(tmp_path):
    marker = uuid.uuid4().hex
    toolset = MCPToolset(StdioTransport(
        command=sys.executable, args=["-m", "codebox.integrations.mcp"], cwd=str(tmp_path),
        env={"CODEBOX_TEST_RUN": marker, "PYTHONPATH": os.pathsep.join(sys.path)},
        keep_alive=False,  # the server (and its box) end with the run
    ))
    steps = iter([
        ToolCallPart("run_python", {"code": "x = 41\nprint('x is set')"}),
        ToolCallPart("run_python", {"code": "x / 0"}),
        ToolCallPart("run_python", {"code": "x + 1"}),
    ])
    seen: list = []

    def model(messages, info: AgentInfo) -> ModelResponse:
        seen.append(messages[-1].parts[-1])
        step = next(steps, None)
        if step is None:
            return ModelResponse(parts=[TextPart(f"The answer is {seen[-1].content.strip()}.")])
        return ModelResponse(parts=[step])

    agent = Agent(FunctionModel(model), toolsets=[toolset])
    assert agent.run_sync("What is 41 + 1?").output == "The answer is 42."
    assert seen[1].content == "x is set\n"
    assert seen[2].outcome == "retried"  # the error goes back to the model to fix
    assert "ZeroDivisionError: division by zero" in str(seen[2].content)
    assert seen[3].content == "42\n"  # one kernel for the whole run
    wait_until(lambda: not our_processes(marker), timeout=20)  # the box ended with it
