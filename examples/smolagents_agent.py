"""A smolagents ``CodeAgent`` whose code runs in a box.

    pip install "codebox[smolagents]"
    python examples/smolagents_agent.py

`CodeboxExecutor` is the agent's executor: every code action runs in the box's kernel, so
variables last from step to step, a failing action reaches the model with its traceback,
and the plots the code shows are handed to the model with the next step. The model here
is scripted (it replays four replies, a typo included) so the example runs anywhere; give
``CodeAgent`` a real model, e.g. ``smolagents.InferenceClientModel()``, and nothing else
changes.
"""

from __future__ import annotations

from smolagents import CodeAgent
from smolagents.models import ChatMessage, MessageRole, Model
from smolagents.monitoring import AgentLogger, LogLevel

from codebox.integrations.smolagents import CodeboxExecutor

TASK = "Daily temperatures were 14.5, 16.0, 15.5, 18.0, 19.5, 21.0, 20.5 C. What is the mean?"

REPLIES = [
    "Thought: keep the data in a variable.\n<code>\n"
    "temps = [14.5, 16.0, 15.5, 18.0, 19.5, 21.0, 20.5]\nprint(len(temps), 'days')\n</code>",
    "Thought: compute the mean.\n<code>\nprint(sum(temps) / len(temp))\n</code>",
    "Thought: a typo, `temp` for `temps`. Fix it, and plot the week.\n<code>\n"
    "mean = sum(temps) / len(temps)\nimport matplotlib.pyplot as plt\n"
    "plt.plot(temps); plt.title('week'); plt.show()\nprint(round(mean, 2))\n</code>",
    "Thought: done.\n<code>\nfinal_answer(f'The mean temperature was {mean:.2f} C.')\n</code>",
]


class ScriptedModel(Model):
    """Replays fixed replies, as a language model would write them."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.replies = list(replies)

    def generate(self, messages, stop_sequences=None, response_format=None,
                 tools_to_call_from=None, **kwargs) -> ChatMessage:
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))


def main() -> None:
    # A LocalBox, or a box on a server if CODEBOX_API_KEY is set; this script prints itself.
    executor = CodeboxExecutor(logger=AgentLogger(LogLevel.OFF))
    try:
        agent = CodeAgent(tools=[], model=ScriptedModel(REPLIES), executor=executor,
                          step_callbacks=[executor.attach_images], verbosity_level=LogLevel.OFF)
        answer = agent.run(TASK)
        for step in agent.memory.steps[1:]:  # what the model read after each action
            seen = str(step.error) if step.error else step.observations or ""
            images = len(step.observations_images or [])
            print(f"step {step.step_number}: " + seen.strip().replace("\n", " | ")[-150:]
                  + (f" (+ {images} image)" if images else ""))
        print("answer:", answer)
    finally:
        executor.cleanup()  # stops the box it made


if __name__ == "__main__":
    main()
