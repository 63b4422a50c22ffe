"""`codebox.integrations.tools`: definitions, call parsing and result formatting (pure, on built
outputs), then real tool calls on a LocalBox, sync and async."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from types import SimpleNamespace

import pytest

from codebox import CodeBoxFile, CodeBoxOutput, CommandResult, ExecError, LocalBox, OutputChunk
from codebox.integrations.tools import (
    TOOLS,
    ToolCall,
    ToolResult,
    aexecute_tool_call,
    execute_tool_call,
    format_command,
    format_file,
    format_output,
    last_frames,
    to_openai_messages,
    tool_definitions,
    truncate_middle,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()

# Recorded from a kernel: a chained KeyError raised inside pandas, called from a cell.
CHAINED_TB = """\
---------------------------------------------------------------------------
KeyError                                  Traceback (most recent call last)
File /venv/pandas/core/indexes/base.py:3816, in Index.get_loc(self, key)
-> 3816     return self._engine.get_loc(casted_key)

File pandas/_libs/index.pyx:172, in pandas._libs.index.IndexEngine.get_loc()

KeyError: 'temperature'

The above exception was the direct cause of the following exception:

KeyError                                  Traceback (most recent call last)
Cell In[1], line 3
----> 3 df['temperature'].mean()

File /venv/pandas/core/frame.py:4330, in DataFrame.__getitem__(self, key)
-> 4330             indexer = self.columns.get_loc(key)

File /venv/pandas/core/indexes/base.py:3823, in Index.get_loc(self, key)
-> 3823     raise KeyError(key) from err

File /venv/pandas/core/indexes/base.py:3900, in Index._raise(self, key)
-> 3900     raise

KeyError: 'temperature'"""


def ipython_tb(depth: int) -> str:
    frames = ["Cell In[1], line 6\n----> 6 f(3)"]
    frames += [f"Cell In[1], line 4, in f(n)\n----> 4     return f(n-1)  # depth {i}"
               for i in range(depth)]
    return ("-" * 75 + "\nValueError                                Traceback (most recent call "
            "last)\n" + "\n\n".join(frames) + "\n\nValueError: boom")


def output(*chunks: tuple[str, str], error: ExecError | None = None,
           truncated: bool = False) -> CodeBoxOutput:
    return CodeBoxOutput.from_chunks([OutputChunk(type=t, content=c) for t, c in chunks],
                                     error=error, truncated=truncated)


# -- definitions ------------------------------------------------------------------------------


def test_definitions_in_both_formats_carry_the_same_schemas():
    openai = tool_definitions("openai")
    anthropic = tool_definitions("anthropic")
    assert [t["function"]["name"] for t in openai] == list(TOOLS) == [t["name"] for t in anthropic]
    for o, a in zip(openai, anthropic, strict=True):
        assert o["type"] == "function"
        assert set(a) == {"name", "description", "input_schema"}
        assert o["function"]["parameters"] == a["input_schema"]
        schema = a["input_schema"]
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
        json.dumps(o), json.dumps(a)  # JSON-ready
    run = tool_definitions("anthropic", names=["run_python"])
    assert run == [anthropic[0]] and run[0]["input_schema"]["required"] == ["code"]
    with pytest.raises(ValueError, match="unknown tool"):
        tool_definitions(names=["rm_rf"])
    with pytest.raises(ValueError, match="format"):
        tool_definitions("gemini")  # type: ignore[arg-type]


# -- calls ------------------------------------------------------------------------------------


def test_calls_are_read_in_every_vendor_shape():
    openai = {"id": "call_1", "type": "function",
              "function": {"name": "run_python", "arguments": '{"code": "1+1"}'}}
    anthropic = {"type": "tool_use", "id": "toolu_1", "name": "run_python",
                 "input": {"code": "1+1"}}
    sdk = SimpleNamespace(id="call_2", function=SimpleNamespace(name="list_files",
                                                                arguments=""))
    assert ToolCall.parse(openai) == ToolCall("run_python", {"code": "1+1"}, "call_1")
    assert ToolCall.parse(anthropic) == ToolCall("run_python", {"code": "1+1"}, "toolu_1")
    assert ToolCall.parse(sdk) == ToolCall("list_files", {}, "call_2")
    assert ToolCall.parse({"name": "list_files"}) == ToolCall("list_files", {})
    with pytest.raises(ValueError, match="not valid JSON"):
        ToolCall.parse({"function": {"name": "run_python", "arguments": "{code: 1"}})
    with pytest.raises(ValueError, match="JSON object"):
        ToolCall.parse({"name": "run_python", "arguments": "[1]"})
    with pytest.raises(ValueError, match="no tool name"):
        ToolCall.parse({"arguments": {}})


@pytest.mark.parametrize("call, message", [
    ({"id": "c", "name": "rm_rf", "arguments": {}}, "unknown tool 'rm_rf'"),
    ({"id": "c", "name": "run_python", "arguments": {}}, "needs the argument 'code'"),
    ({"id": "c", "name": "run_python", "arguments": {"code": "1", "x": 2}}, "no argument"),
    ({"id": "c", "name": "upload_file",
      "arguments": {"file_name": "a", "content": "%%", "encoding": "base64"}}, "base64"),
    ({"id": "c", "name": "install_packages", "arguments": {"package_names": []}},
     "package_names"),
    ({"id": "c", "function": {"name": "run_python", "arguments": "{"}}, "not valid JSON"),
])
def test_a_bad_call_is_an_error_result_and_never_reaches_the_box(call, message):
    not_a_box = object()  # any use of it would raise AttributeError
    result = execute_tool_call(not_a_box, call)  # type: ignore[arg-type]
    assert result.is_error and message in result.text
    assert result.tool_call_id == "c"
    assert asyncio.run(aexecute_tool_call(not_a_box, call)).text == result.text  # type: ignore


# -- formatting -------------------------------------------------------------------------------


def test_truncate_middle_keeps_head_and_tail_within_budget_and_counts_the_cut():
    text = "".join(f"line {i:05d}\n" for i in range(10_000))
    cut = truncate_middle(text, 1000)
    assert len(cut) <= 1000
    assert cut.startswith("line 00000\n") and cut.endswith("line 09999\n")
    head, rest = cut.split("\n[... ", 1)
    n = int(rest.split(" characters", 1)[0])
    tail = rest.split("middle ...]\n", 1)[1]
    assert len(head) + n + len(tail) == len(text)  # what the note says is what was cut
    assert text.startswith(head) and text.endswith(tail)
    assert truncate_middle("short", 1000) == "short"
    assert len(truncate_middle("x" * 500, 50)) == 50  # tiny budgets still hold


def test_last_frames_keeps_the_innermost_frames_and_the_users_own_line():
    tb = last_frames(ipython_tb(6), frames=2)
    assert "depth 5" in tb and "depth 4" in tb and "depth 3" not in tb
    assert "[... 5 frames cut ...]" in tb  # the module frame and depths 0-3
    assert tb.endswith("ValueError: boom")
    assert last_frames(ipython_tb(1), frames=3).count("Cell In[1]") == 2  # nothing cut
    chained = last_frames(CHAINED_TB, frames=2)
    assert chained.startswith("[1 earlier exception in the chain cut]")
    # The two innermost frames are pandas', so the cell's own frame is kept before them.
    assert "----> 3 df['temperature'].mean()" in chained
    assert "_raise" in chained and "3823" in chained and "4330" not in chained
    assert "IndexEngine" not in chained
    plain = ("Traceback (most recent call last):\n"
             + "".join(f'  File "m.py", line {i}, in f{i}\n    f{i + 1}()\n' for i in range(5))
             + "RecursionError: deep")
    cut = last_frames(plain, frames=2)
    assert "[... 3 outer frames cut ...]" in cut and "in f3" in cut and "in f2" not in cut
    assert cut.endswith("RecursionError: deep")
    assert last_frames("no frames here") == "no frames here"


def test_format_output_keeps_order_marks_images_and_ends_with_the_error():
    err = ExecError(name="ValueError", value="boom", traceback=ipython_tb(1))
    out = output(("stdout", "before\n"), ("image/png", PNG), ("stderr", "warned"),
                 ("text", "42"), ("text/html", "<b>x</b>"), ("error", "ValueError: boom"),
                 error=err)
    text, images = format_output(out)
    assert text.index("before") < text.index("[image 1: PNG, attached]") < text.index(
        "warned") < text.index("42") < text.index("<b>x</b>") < text.index("Traceback")
    assert text.endswith("ValueError: boom") and text.count("ValueError: boom") == 1
    assert [i.data for i in images] == [PNG] and images[0].media_type == "image/png"


def test_format_output_spends_the_budget_on_the_output_but_keeps_the_error():
    err = ExecError(name="ZeroDivisionError", value="division by zero",
                    traceback=ipython_tb(0).replace("ValueError: boom",
                                                    "ZeroDivisionError: division by zero"))
    out = output(("stdout", "".join(f"row {i}\n" for i in range(50_000))), error=err)
    text, _ = format_output(out, max_chars=2000)
    assert len(text) <= 2000
    assert text.startswith("row 0\n") and "row 49999" in text and "cut from the middle" in text
    assert text.endswith("ZeroDivisionError: division by zero")


def test_format_output_images_limit_truncation_timeout_and_silence():
    text, images = format_output(output(*[("image/png", PNG)] * 3), max_images=2)
    assert len(images) == 2 and "[image 3: PNG, not attached (limit)]" in text
    text, _ = format_output(output(("stdout", "abc"), truncated=True))
    assert "abc" in text and "output limit" in text
    timeout = ExecError(name="TimeoutError", value="the run exceeded its timeout of 1 s")
    text, _ = format_output(output(("stdout", "partial\n"), error=timeout))
    assert text.startswith("partial\n") and "TimeoutError: the run exceeded" in text
    assert "variables defined before are kept" in text
    assert format_output(output())[0] == "[the code ran and printed nothing]"


def test_images_come_with_their_alt_text():
    figure = OutputChunk(type="image/png", content=PNG, data={
        "image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"})
    photo = OutputChunk(type="image/jpeg", content=PNG, data={
        "image/jpeg": PNG, "text/plain": ["<PIL.Image.Image image ", "mode=RGB size=10x10>"]})
    svg = OutputChunk(type="image/svg+xml", content="<svg/>", data={
        "image/svg+xml": "<svg/>", "text/plain": "<Diagram>"})
    bare = OutputChunk(type="image/png", content=PNG)  # a box that keeps no bundle
    text, images = format_output(CodeBoxOutput.from_chunks([figure, photo, svg, bare]),
                                 max_images=2)
    assert text.splitlines() == [
        "[image 1: PNG, attached: <Figure size 640x480 with 1 Axes>]",
        "[image 2: JPEG, attached: <PIL.Image.Image image mode=RGB size=10x10>]",
        "[image/svg+xml output, 6 characters: <Diagram>]",
        "[image 3: PNG, not attached (limit)]",
    ]
    assert [(i.media_type, i.alt_text) for i in images] == [
        ("image/png", "<Figure size 640x480 with 1 Axes>"),
        ("image/jpeg", "<PIL.Image.Image image mode=RGB size=10x10>")]
    huge = OutputChunk(type="image/png", content=PNG, data={"text/plain": "x" * 10_000})
    assert len(format_output(CodeBoxOutput.from_chunks([huge]))[1][0].alt_text) <= 300


def test_every_shape_of_a_tool_is_made_from_its_one_record():
    from pydantic import ValidationError

    for name, spec in TOOLS.items():
        schema = spec.input_model.model_json_schema()
        assert spec.input_model.__name__ == name.title().replace("_", "") + "Input"
        assert set(schema["properties"]) == set(spec.parameters["properties"])
        assert set(schema.get("required", [])) == set(spec.parameters["required"])
        for key, prop in spec.parameters["properties"].items():
            assert schema["properties"][key]["description"] == prop["description"]
        assert spec.prepare is not None and spec.present is not None
    upload = TOOLS["upload_file"].input_model
    assert upload(file_name="a", content="b").encoding == "text"  # the schema's default
    with pytest.raises(ValidationError):
        upload(file_name="a", content="b", encoding="rot13")
    with pytest.raises(ValidationError):
        TOOLS["install_packages"].input_model(package_names="pandas")


def test_files_are_shown_as_text_image_or_described():
    text, images = format_file(CodeBoxFile(name="a.csv", content=b"x,y\n1,2\n"))
    assert text == "a.csv (8 bytes):\nx,y\n1,2\n" and not images
    text, images = format_file(CodeBoxFile(name="p/plot.JPG", content=b"\xff\xd8jpeg"))
    assert images[0].media_type == "image/jpeg"
    assert base64.b64decode(images[0].data) == b"\xff\xd8jpeg"
    text, images = format_file(CodeBoxFile(name="b.xlsx", content=b"PK\x03\x04\x00\xff"))
    assert "binary file of 6 bytes" in text and not images
    text, _ = format_file(CodeBoxFile(name="big.txt", content=b"y\n" * 50_000), max_chars=500)
    assert len(text) <= 500 and "cut from the middle" in text


def test_results_become_vendor_messages():
    from codebox.integrations.tools import ToolImage

    a = ToolResult(text="plot", images=[ToolImage(PNG)], tool_call_id="c1", format="anthropic")
    b = ToolResult(text="Oops", is_error=True, tool_call_id="c2")
    block = a.to_anthropic_block()
    assert block == {"type": "tool_result", "tool_use_id": "c1", "content": [
        {"type": "text", "text": "plot"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]}
    assert b.to_anthropic_block()["is_error"] is True
    assert a.content == block["content"]
    messages = to_openai_messages([a, b])
    # Every tool message first (the API wants them right after the assistant turn)...
    assert [m["role"] for m in messages] == ["tool", "tool", "user"]
    assert [m["tool_call_id"] for m in messages[:2]] == ["c1", "c2"]
    # ...then the images in a user message.
    assert messages[2]["content"][1] == {"type": "image_url",
                                         "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert b.to_openai_messages() == [{"role": "tool", "tool_call_id": "c2", "content": "Oops"}]


# -- on a real box -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box():
    box = LocalBox()
    yield box
    box.stop()


PLOT_AND_FAIL = (
    "import matplotlib.pyplot as plt\nprint('drawing')\nplt.plot([1, 2]); plt.show()\n"
    "def f():\n    raise RuntimeError('after the plot')\nf()"
)


def test_format_command_keeps_order_and_ends_with_the_exit_code():
    chunks = [OutputChunk(type="stdout", content="out\n"),
              OutputChunk(type="stderr", content="err")]
    result = CommandResult.from_chunks(chunks, exit_code=2)
    assert format_command(result) == "out\nerr\n[exit code 2]"
    assert format_command(CommandResult(exit_code=0)) == "[no output]\n[exit code 0]"
    slow = CommandResult.from_chunks(chunks, exit_code=-9, timed_out=True)
    assert format_command(slow).endswith("ran out of time and was ended, with every "
                                         "process it started]")
    big = CommandResult.from_chunks([OutputChunk(type="stdout", content="x" * 50_000)],
                                    exit_code=0)
    text = format_command(big, max_chars=1000)
    assert len(text) <= 1000 and "cut from the middle" in text and text.endswith("[exit code 0]")


@pytest.mark.integration
def test_real_shell_and_remove_calls(box):
    box.upload("sh/a.txt", "alpha\nbeta\n")
    listed = execute_tool_call(box, {"name": "run_shell",
                                     "arguments": {"command": "grep -n beta a.txt", "cwd": "sh"}})
    assert listed.text == "2:beta\n[exit code 0]" and not listed.is_error
    assert listed.command is not None and listed.command.stdout == "2:beta\n"
    failed = execute_tool_call(box, {"name": "run_shell", "arguments": {"command": "ls nope"}})
    assert failed.is_error and failed.text.endswith("[exit code 2]") and "nope" in failed.text
    slow = execute_tool_call(box, {"name": "run_shell", "arguments": {"command": "sleep 30"}},
                             timeout=0.5)
    assert slow.is_error and "ran out of time" in slow.text
    for bad in [{"command": "ls", "cwd": "/etc"}, {"command": "echo \u0000"}, {"command": " "}]:
        refused = execute_tool_call(box, {"name": "run_shell", "arguments": bad})
        assert refused.is_error, bad
    removed = execute_tool_call(box, {"name": "remove_file", "arguments": {"file_name": "sh"}})
    assert removed.text == "Removed sh." and not box.exists("sh")
    again = execute_tool_call(box, {"name": "remove_file", "arguments": {"file_name": "sh"}})
    assert again.is_error and "remove_file failed" in again.text


@pytest.mark.integration
def test_real_calls_sync(box):
    call = {"id": "call_9", "type": "function",
            "function": {"name": "run_python", "arguments": json.dumps({"code": PLOT_AND_FAIL})}}
    result = execute_tool_call(box, call, format="openai")
    assert result.is_error and result.tool_call_id == "call_9"
    assert re.match(r"drawing\n\[image 1: PNG, attached(: <Figure size \d+x\d+ with 1 Axes>)?\]\n",
                    result.text)
    assert "raise RuntimeError('after the plot')" in result.text
    assert result.text.endswith("RuntimeError: after the plot")
    assert base64.b64decode(result.images[0].data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert result.output is not None and result.output.error.name == "RuntimeError"

    up = execute_tool_call(box, {"name": "upload_file", "arguments": {
        "file_name": "d/x.bin", "content": base64.b64encode(b"\x00\x01").decode(),
        "encoding": "base64"}})
    assert up.text == "Wrote d/x.bin (2 bytes)." and not up.is_error
    down = execute_tool_call(box, {"name": "download_file", "arguments": {"file_name": "d/x.bin"}})
    assert down.file is not None and down.file.content == b"\x00\x01"
    assert "binary file of 2 bytes" in down.text
    listing = execute_tool_call(box, {"name": "list_files", "arguments": {}})
    assert "d/x.bin (2 bytes)" in listing.text.splitlines()
    missing = execute_tool_call(box, {"id": "m", "name": "download_file",
                                      "arguments": {"file_name": "nope.txt"}})
    assert missing.is_error and "nope.txt" in missing.text
    escape = execute_tool_call(box, {"name": "upload_file",
                                     "arguments": {"file_name": "../x", "content": "no"}})
    assert escape.is_error and "upload_file failed" in escape.text
    bad = execute_tool_call(box, {"name": "install_packages",
                                  "arguments": {"package_names": ["not a requirement!!"]}})
    assert bad.is_error and "install_packages failed" in bad.text


@pytest.mark.integration
def test_real_calls_async_share_the_state(box):
    async def calls() -> list[ToolResult]:
        use = {"type": "tool_use", "id": "toolu_1", "name": "upload_file",
               "input": {"file_name": "n.txt", "content": "21"}}
        first = await aexecute_tool_call(box, use, format="anthropic")
        run = {"type": "tool_use", "id": "toolu_2", "name": "run_python",
               "input": {"code": "n = int(open('n.txt').read())\nprint(n * 2)\nn"}}
        second = await aexecute_tool_call(box, run, format="anthropic")
        slow = {"name": "run_python", "arguments": {"code": "import time; time.sleep(30)"}}
        third = await aexecute_tool_call(box, slow, timeout=0.5)
        fourth = await aexecute_tool_call(box, {"name": "run_python", "arguments": {"code": "n"}})
        return [first, second, third, fourth]

    first, second, third, fourth = asyncio.run(calls())
    assert first.text == "Wrote n.txt (2 bytes)."
    assert second.text == "42\n21\n" and second.to_anthropic_block()["tool_use_id"] == "toolu_2"
    assert third.is_error and "TimeoutError" in third.text
    assert fourth.text == "21\n"  # the timeout kept the kernel's state
