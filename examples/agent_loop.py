"""An LLM agent that uses a box as its code-execution tool.

    python examples/agent_loop.py

The model gets codebox's tool definitions (`codebox.integrations.tools.tool_definitions`);
each tool call it makes is carried out on the box by
`codebox.integrations.tools.execute_tool_call`, and the formatted
result (text within a budget, errors with their traceback, plots as images) goes back to
the model, until it answers in text.

- With OPENAI_API_KEY set, the model is OpenAI's Chat Completions API (OPENAI_MODEL,
  default gpt-4o-mini).
- With ANTHROPIC_API_KEY set, it is Anthropic's Messages API (ANTHROPIC_MODEL, default
  claude-3-5-haiku-latest).
- With neither, a scripted model replays a fixed list of tool calls through the same two
  loops, in both formats, so the example runs anywhere.

The APIs are called with httpx (a codebox dependency), so no vendor SDK is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx

from codebox import BaseBox, CodeBox
from codebox.integrations.tools import (
    ToolResult,
    execute_tool_call,
    to_openai_messages,
    tool_definitions,
)

SYSTEM = (
    "You are a data analyst with a Python tool. Use the tools to compute answers; do not "
    "guess numbers. When you are done, answer in two sentences."
)
TASK = (
    "Upload this CSV as temps.csv, then tell me the mean temperature, plot the series, and "
    "write a one-line summary to summary.txt:\n"
    "day,temp_c\nmon,14.5\ntue,16.0\nwed,15.5\nthu,18.0\nfri,19.5\nsat,21.0\nsun,20.5\n"
)
MAX_TURNS = 10

Ask = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]
"""A model: (messages, tools) -> the assistant's message, in its vendor's format."""


# -- the two loops: the same for a real model and for the scripted one -----------------------


def show(result: ToolResult) -> None:
    status = "error" if result.is_error else "ok"
    images = f" + {len(result.images)} image(s)" if result.images else ""
    text = result.text.strip().replace("\n", "\n     ")
    print(f"  <- {result.name} [{status}]{images}: {text}")


def openai_loop(box: BaseBox, ask: Ask) -> str:
    """Chat Completions: tool calls in ``message.tool_calls``, answers as tool messages."""
    tools = tool_definitions("openai")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": TASK},
    ]
    for _ in range(MAX_TURNS):
        reply = ask(messages, tools)
        messages.append(reply)
        calls = reply.get("tool_calls") or []
        if not calls:
            return reply.get("content") or ""
        results = []
        for call in calls:
            print(f"  -> {call['function']['name']}({call['function']['arguments'][:80]})")
            results.append(execute_tool_call(box, call, format="openai"))
            show(results[-1])
        messages.extend(to_openai_messages(results))
    return "(no answer within the turn limit)"


def anthropic_loop(box: BaseBox, ask: Ask) -> str:
    """Messages API: ``tool_use`` blocks in, ``tool_result`` blocks back in a user turn."""
    tools = tool_definitions("anthropic")
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    for _ in range(MAX_TURNS):
        reply = ask(messages, tools)
        messages.append(reply)
        uses = [block for block in reply["content"] if block["type"] == "tool_use"]
        if not uses:
            return " ".join(b["text"] for b in reply["content"] if b["type"] == "text")
        answers = []
        for use in uses:
            print(f"  -> {use['name']}({json.dumps(use['input'])[:80]})")
            result = execute_tool_call(box, use, format="anthropic")
            show(result)
            answers.append(result.to_anthropic_block())
        messages.append({"role": "user", "content": answers})
    return "(no answer within the turn limit)"


# -- the models ----------------------------------------------------------------------------


def openai_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(
        "https://api.openai.com/v1/chat/completions",
        headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
        json={"model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
              "messages": messages, "tools": tools},
        timeout=120,
    )
    response.raise_for_status()
    message = response.json()["choices"][0]["message"]
    return {k: v for k, v in message.items() if k in ("role", "content", "tool_calls")}


def anthropic_model(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> dict[str, Any]:
    response = httpx.post(
        "https://api.anthropic.com/v1/messages",
        headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"],
                 "anthropic-version": "2023-06-01"},
        json={"model": os.environ.get("ANTHROPIC_MODEL", "claude-3-5-haiku-latest"),
              "max_tokens": 2048, "system": SYSTEM, "messages": messages, "tools": tools},
        timeout=120,
    )
    response.raise_for_status()
    return {"role": "assistant", "content": response.json()["content"]}


SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("upload_file", {"file_name": "temps.csv", "content": TASK.split(":\n", 1)[1]}),
    # A first try with a wrong column name: the model reads the KeyError and fixes it.
    ("run_python", {"code": "import pandas as pd\ndf = pd.read_csv('temps.csv')\n"
                            "df['temperature'].mean()"}),
    ("run_python", {"code": "print(df.columns.tolist())\nmean = df['temp_c'].mean()\n"
                            "print(f'mean: {mean:.2f} C')\n"
                            "ax = df.plot(x='day', y='temp_c', marker='o', legend=False)\n"
                            "ax.set_ylabel('temp (C)')\nimport matplotlib.pyplot as plt\n"
                            "plt.show()"}),
    ("run_python", {"code": "open('summary.txt', 'w').write(\n"
                            "    f'{len(df)} days, mean {mean:.2f} C, '\n"
                            "    f'warmest {df.temp_c.max()} C'\n)"}),
    ("download_file", {"file_name": "summary.txt"}),
]


class ScriptedModel:
    """Stands in for a model: makes the calls of `SCRIPT` one per turn, in the vendor's
    format, then answers with what the last tool result said."""

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        self.turn = 0

    def __call__(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict:
        assert {t.get("name") or t["function"]["name"] for t in tools} >= {n for n, _ in SCRIPT}
        self.turn += 1
        if self.turn > len(SCRIPT):
            return self._answer(f"Done. summary.txt says: {self._last_result(messages)}")
        name, arguments = SCRIPT[self.turn - 1]
        call_id = f"call_{self.turn}"
        if self.vendor == "openai":
            call = {"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        use = {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
        return {"role": "assistant", "content": [use]}

    def _answer(self, text: str) -> dict[str, Any]:
        if self.vendor == "openai":
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    def _last_result(self, messages: list[dict[str, Any]]) -> str:
        last = messages[-1]
        if self.vendor == "openai":
            text = last["content"]
        else:
            text = last["content"][-1]["content"][0]["text"]
        return text.splitlines()[-1]


def main() -> None:
    with CodeBox() as box:
        if os.environ.get("OPENAI_API_KEY"):
            runs = [("openai", openai_loop, openai_model)]
        elif os.environ.get("ANTHROPIC_API_KEY"):
            runs = [("anthropic", anthropic_loop, anthropic_model)]
        else:
            print("No OPENAI_API_KEY or ANTHROPIC_API_KEY: a scripted model makes the calls.")
            runs = [("openai", openai_loop, ScriptedModel("openai")),
                    ("anthropic", anthropic_loop, ScriptedModel("anthropic"))]
        for vendor, loop, model in runs:
            print(f"== {vendor} format")
            print("answer:", loop(box, model))


if __name__ == "__main__":
    main()
