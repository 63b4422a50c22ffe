"""`codebox.integrations.autogen`: the executor under the checks AutoGen makes of its own
Jupyter executor, its component config, then AutoGen's ``CodeExecutorAgent`` driven by a
scripted model, on one LocalBox."""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import pytest
from autogen_agentchat.agents import CodeExecutorAgent
from autogen_agentchat.messages import CodeExecutionEvent
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_core.models import ModelInfo
from autogen_ext.models.replay import ReplayChatCompletionClient

from codebox import LocalBox, Sandbox
from codebox.integrations.autogen import CodeboxCodeExecutor, CodeboxCodeResult

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def box():
    box = LocalBox()
    yield box
    box.stop()


@pytest.fixture
def executor(box, tmp_path):
    return CodeboxCodeExecutor(box=box, output_dir=tmp_path, timeout=2)


def python(*codes: str) -> list[CodeBlock]:
    return [CodeBlock(code=code, language="python") for code in codes]


def run(executor: CodeboxCodeExecutor, blocks: list[CodeBlock],
        token: CancellationToken | None = None) -> CodeboxCodeResult:
    async def go() -> CodeboxCodeResult:
        async with executor:
            return await executor.execute_code_blocks(blocks, token or CancellationToken())

    return asyncio.run(go())


def traceback_of(cell: int, line: str, error: str) -> str:
    """IPython's traceback of a one-line cell, as AutoGen's executor shows it."""
    return inspect.cleandoc(f"""
        ---------------------------------------------------------------------------
        {error.split(":")[0]:<42}Traceback (most recent call last)
        Cell In[{cell}], line 1
        ----> 1 {line}

        {error}
    """)


# -- what AutoGen checks of its JupyterCodeExecutor ------------------------------------------


def test_blocks_run_in_order_and_share_state(executor):
    result = run(executor, python("import sys; print('hello world!')", "a = 100 + 100; print(a)"))
    assert result == CodeboxCodeResult(exit_code=0, output="hello world!\n\n200\n")
    assert run(executor, python("print(a)")).output == "200\n"


def test_an_error_stops_the_blocks_and_shows_the_traceback(executor, box):
    count = box.run("1").execution_count
    result = run(executor, python(
        "import sys; print('hello world!')",
        "a = 100 + 100; print(a); print(undefined_variable)",
        "print('never')",
    ))
    error = traceback_of(count + 2, "a = 100 + 100; print(a); print(undefined_variable)",
                         "NameError: name 'undefined_variable' is not defined")
    assert result == CodeboxCodeResult(exit_code=1, output=f"hello world!\n\n200\n\n{error}")


def test_after_a_restart_the_kernel_is_fresh(executor):
    run(executor, python("before_restart = 1"))

    async def restart_then_run() -> CodeboxCodeResult:
        await executor.restart()
        return await executor.execute_code_blocks(
            python("print('hello world!')\nprint('before_restart' in globals())"),
            CancellationToken())

    assert asyncio.run(restart_then_run()).output == "hello world!\nFalse\n"


def test_a_block_that_runs_out_of_time_raises_and_keeps_the_state(executor):
    run(executor, python("kept = 'yes'"))
    with pytest.raises(asyncio.TimeoutError, match="timeout of 2 s"):
        run(executor, python("import time; time.sleep(10); print('hello world!')"))
    assert run(executor, python("print(kept)")).output == "yes\n"


def test_cancelling_interrupts_the_kernel(executor):
    async def cancel_after_start() -> float:
        token = CancellationToken()
        task = asyncio.ensure_future(executor.execute_code_blocks(
            python("import time; time.sleep(10); print('hello world!')"), token))
        await asyncio.sleep(0.5)  # let the block start in the kernel
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        result = await executor.execute_code_blocks(python("print('next')"), CancellationToken())
        assert result.output == "next\n"
        return time.monotonic() - started

    assert asyncio.run(cancel_after_start()) < 5  # the sleep did not run to its end


def test_displayed_images_and_html_are_saved_as_files(executor, tmp_path):
    image = run(executor, python(inspect.cleandoc("""
        from PIL import Image, ImageDraw
        img = Image.new("RGB", (100, 100), color="white")
        ImageDraw.Draw(img).rectangle((10, 10, 90, 90), outline="black", fill="blue")
        display(img)
    """)))
    assert image.exit_code == 0 and len(image.output_files) == 1
    assert image.output_files[0].parent == tmp_path
    assert image.output_files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = run(executor, python(
        'from IPython.core.display import HTML\nHTML("<div style=\'color:blue\'>Hi</div>")'))
    assert len(html.output_files) == 1 and html.output_files[0].suffix == ".html"
    assert html.output_files[0].read_text() == "<div style='color:blue'>Hi</div>"


def test_a_serialised_executor_loads_again(box, tmp_path):
    given = CodeboxCodeExecutor(box=box, timeout=5)
    run(given, python("shared = 'same kernel'"))
    loaded = CodeboxCodeExecutor.load_component(given.dump_component())
    assert isinstance(loaded, CodeboxCodeExecutor) and loaded.timeout == 5
    assert run(loaded, python("print(shared)")).output == "same kernel\n"  # reattached

    made = CodeboxCodeExecutor(sandbox=Sandbox(memory_mb=1024), output_dir=tmp_path)
    config = made.dump_component()
    assert config.provider == "codebox.integrations.autogen.CodeboxCodeExecutor"
    assert config.config["box_options"]["sandbox"]["memory_mb"] == 1024
    keyed = CodeboxCodeExecutor(api_key="local", env={"A": "1"}).dump_component()
    assert keyed.config["box_options"] == {"env": {"A": "1"}}  # never a secret in a config
    again = CodeboxCodeExecutor.load_component(json.loads(config.model_dump_json()))
    assert again.dump_component() == config
    assert again.box is not made.box and again.box.status() == "stopped"  # made when used


def test_bad_arguments_and_other_languages(executor):
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CodeboxCodeExecutor(timeout=0)
    shell = run(executor, [CodeBlock(code="echo from the shell; exit 3", language="bash")])
    assert shell == CodeboxCodeResult(exit_code=3, output="from the shell\n")
    other = run(executor, [CodeBlock(code="puts 1", language="ruby")])
    assert other.exit_code == 1 and "unsupported language 'ruby'" in other.output


# -- AutoGen's CodeExecutorAgent, its model scripted -----------------------------------------


def test_a_code_executor_agent_recovers_from_an_error_with_its_state(box):
    model = ReplayChatCompletionClient([
        "Load, then sum.\n```python\ntemps = [12.5, 14.0, 17.5]\nprint(sum(temp))\n```",
        '{"retry": true, "reason": "a typo: temp for temps"}',
        "Fixed.\n```python\nprint(round(sum(temps) / len(temps), 2))\n```",
        "The mean temperature is 14.67.",
    ], model_info=ModelInfo(vision=False, function_calling=False, json_output=True,
                            family="scripted", structured_output=True))
    agent = CodeExecutorAgent("coder", code_executor=CodeboxCodeExecutor(box=box),
                              model_client=model, max_retries_on_error=1,
                              approval_func=lambda request: _approve(request))

    async def go() -> list:
        return [event async for event in agent.run_stream(task="What is the mean temperature?")]

    events = asyncio.run(go())
    runs = [e.result for e in events if isinstance(e, CodeExecutionEvent)]
    assert [r.exit_code for r in runs] == [1, 0]
    assert "NameError: name 'temp' is not defined" in runs[0].output
    assert runs[1].output == "14.67\n"  # temps survived the failed block
    assert events[-1].messages[-1].content == "The mean temperature is 14.67."


def _approve(request):
    from autogen_agentchat.agents import ApprovalResponse

    return ApprovalResponse(approved=True, reason="scripted test")
