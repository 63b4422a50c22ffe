"""`codebox.integrations.smolagents`: the executor under smolagents' own remote-executor
checks, then a real ``CodeAgent`` driven by a scripted model, on one LocalBox."""

from __future__ import annotations

import io
from textwrap import dedent

import PIL.Image
import pytest
from rich.console import Console
from smolagents import CodeAgent
from smolagents.default_tools import FinalAnswerTool
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import AgentLogger, LogLevel
from smolagents.utils import AgentError

from codebox import LocalBox
from codebox.integrations.smolagents import CodeboxExecutor

pytestmark = pytest.mark.integration


def quiet_logger() -> AgentLogger:
    return AgentLogger(LogLevel.INFO, Console(force_terminal=False, file=io.StringIO()))


@pytest.fixture(scope="module")
def box():
    box = LocalBox()
    yield box
    box.stop()


@pytest.fixture
def executor(box):
    executor = CodeboxExecutor(box=box, logger=quiet_logger())
    yield executor
    executor.cleanup()  # a given box is left running for the next test
    assert box.status() == "running"


# -- what smolagents checks of every remote executor (its Docker/Modal/E2B suite) ----------


def test_variables_and_imports_last_from_one_action_to_the_next(executor):
    executor("import numpy as np; a = 2")
    assert "1.41421" in executor("print(np.sqrt(a))").logs


@pytest.mark.parametrize("code", [
    'final_answer("This is the final answer")',
    'result = "This is the final answer"\nfinal_answer(result)',
])
def test_final_answer_ends_the_run_with_its_value(executor, code):
    executor.send_tools({"final_answer": FinalAnswerTool()})
    output = executor(code)
    assert output.is_final_answer and output.output == "This is the final answer"


def test_an_image_given_as_final_answer_comes_back_as_an_image(executor):
    executor.send_tools({"final_answer": FinalAnswerTool()})
    output = executor(dedent("""
        from PIL import Image
        final_answer(Image.new("RGB", (10, 10), (255, 0, 0)))
    """))
    assert isinstance(output.output, PIL.Image.Image) and output.output.size == (10, 10)
    assert output.output.getpixel((0, 0)) == (255, 0, 0)


def test_a_syntax_error_is_an_agent_error(executor):
    with pytest.raises(AgentError, match="SyntaxError"):
        executor('print("Missing Parenthesis')


@pytest.mark.parametrize("code, answer", [
    ('final_answer("""This is\na multiline\nfinal answer""")',
     "This is\na multiline\nfinal answer"),
    ("text = '''Text containing\nfinal_answer(5)\n'''\nfinal_answer(text)",
     "Text containing\nfinal_answer(5)\n"),
    ('num = 2\nif num == 1:\n    final_answer("One")\nelif num == 2:\n    final_answer("Two")',
     "Two"),
])
def test_final_answer_patterns(executor, code, answer):
    executor.send_tools({"final_answer": FinalAnswerTool()})
    output = executor(code)
    assert output.is_final_answer is True and output.output == answer


def test_custom_final_answer_tools(executor):
    class Prefixed(FinalAnswerTool):
        def forward(self, answer: str) -> str:
            return "CUSTOM" + answer

    class TwoParts(FinalAnswerTool):
        inputs = {  # noqa: RUF012 - smolagents reads the class attribute
            "answer1": {"type": "string", "description": "First part of the answer."},
            "answer2": {"type": "string", "description": "Second part of the answer."},
        }

        def forward(self, answer1: str, answer2: str) -> str:
            return answer1 + "CUSTOM" + answer2

    executor.send_tools({"final_answer": Prefixed()})
    assert executor('final_answer(answer="_answer")').output == "CUSTOM_answer"
    executor.send_tools({"final_answer": TwoParts()})
    output = executor('final_answer(\n    answer1="answer1_",\n    answer2="_answer2"\n)')
    assert output.output == "answer1_CUSTOM_answer2"


# -- what codebox adds -------------------------------------------------------------------


def test_logs_value_and_images_of_an_action(executor):
    output = executor("print('before')\nimport sys; print('warned', file=sys.stderr)\n6 * 7")
    assert output.logs == "before\nwarned\n" and output.output == "42"
    assert executor("x = 1;").output is None  # a semicolon hides the value, as in IPython
    output = executor("import matplotlib.pyplot as plt\nplt.plot([1, 3]); plt.show()\n"
                      "print('drawn')")
    assert output.logs.startswith("[image 1: PNG") and output.logs.endswith("drawn\n")
    assert [image.format for image in executor.images] == ["PNG"]


def test_errors_keep_the_output_before_them_and_a_timeout_keeps_the_variables(box):
    executor = CodeboxExecutor(box=box, logger=quiet_logger(), timeout=1)
    with pytest.raises(AgentError) as failed:
        executor("kept = 'yes'\nprint('partial')\nundefined_name")
    assert str(failed.value).startswith("partial\nExecuting code yielded an error:")
    assert "NameError: name 'undefined_name' is not defined" in str(failed.value)
    with pytest.raises(AgentError, match="TimeoutError"):
        executor("import time\nwhile True: time.sleep(0.05)")
    assert executor("kept").output == "'yes'"


def test_a_dead_or_restarted_kernel_gets_the_tools_and_variables_again(box):
    executor = CodeboxExecutor(box=box, logger=quiet_logger())
    executor.send_tools({"final_answer": FinalAnswerTool()})
    executor.send_variables({"city": "Lyon"})
    with pytest.raises(AgentError, match="KernelDiedError"):
        executor("import os; os._exit(1)")
    output = executor("final_answer(city)")  # defined again on the new kernel
    assert output.is_final_answer and output.output == "Lyon"
    executor("mine = 1")
    executor.restart()
    with pytest.raises(AgentError, match="NameError"):
        executor("mine")
    assert executor("final_answer(city.upper())").output == "LYON"


def test_an_executor_stops_the_box_it_made_and_only_that():
    executor = CodeboxExecutor(logger=quiet_logger(), working_dir=None)
    assert executor("1 + 1").output == "2"
    assert executor.box.status() == "running"
    executor.cleanup()
    assert executor.box.status() == "stopped"
    with pytest.raises(ValueError, match="not both"):
        CodeboxExecutor(box=executor.box, sandbox=True)


# -- a CodeAgent, its model scripted --------------------------------------------------------


class ScriptedModel(Model):
    """Answers each call with the next scripted reply; keeps what it was sent."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.replies = list(replies)
        self.seen: list[list[ChatMessage]] = []

    def generate(self, messages, stop_sequences=None, response_format=None,
                 tools_to_call_from=None, **kwargs) -> ChatMessage:
        self.seen.append(list(messages))
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


def said(messages: list[ChatMessage]) -> str:
    parts = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            parts += [part.get("text", "") for part in content if isinstance(part, dict)]
        elif content:
            parts.append(content)
    return "\n".join(parts)


def test_a_code_agent_keeps_state_recovers_from_errors_sees_images_and_answers(box):
    executor = CodeboxExecutor(box=box, logger=quiet_logger())
    model = ScriptedModel([
        "Thought: load the data.\n<code>\ntemps = [12.5, 14.0, 17.5]\nprint(len(temps))\n</code>",
        "Thought: average it.\n<code>\nprint(sum(temps) / len(temp))\n</code>",
        "Thought: a typo; fix it and plot.\n<code>\nmean = sum(temps) / len(temps)\n"
        "import matplotlib.pyplot as plt\nplt.plot(temps); plt.show()\nprint(mean)\n</code>",
        "Thought: done.\n<code>\nfinal_answer(f'mean {mean:.2f}')\n</code>",
    ])
    agent = CodeAgent(tools=[], model=model, executor=executor, max_steps=6,
                      step_callbacks=[executor.attach_images], verbosity_level=0)
    assert agent.run("What is the mean temperature?") == "mean 14.67"
    assert not model.replies
    # The model saw each step's output, the error with its line, and the plot.
    assert "3\n" in said(model.seen[1][-1:])
    error_seen = said(model.seen[2][-2:])
    assert "NameError: name 'temp' is not defined" in error_seen
    assert "len(temp)" in error_seen
    assert "14.666666666666666" in said(model.seen[3][-2:])
    images = [part["image"] for message in model.seen[3][-3:] for part in message.content
              if isinstance(part, dict) and part.get("type") == "image"]
    assert len(images) == 1 and images[0].format == "PNG"
