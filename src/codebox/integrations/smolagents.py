"""codebox as the code executor of smolagents' ``CodeAgent`` (the ``codebox[smolagents]``
extra).

    from smolagents import CodeAgent
    from codebox.integrations.smolagents import CodeboxExecutor

    executor = CodeboxExecutor(sandbox=True)          # or CodeboxExecutor(box=my_box)
    agent = CodeAgent(tools=[], model=model, executor=executor,
                      step_callbacks=[executor.attach_images])
    agent.run("How many primes are there below 10,000?")
    executor.cleanup()                                # stops the box it made

Each code action runs in the box's kernel: variables and imports persist from step to
step, ``final_answer(...)`` ends the run with its value, and an error in the code reaches
the model with its traceback so the agent can fix it. Plots and other images shown by the
code are kept: `CodeboxExecutor.attach_images` hands them to the model with the next step.
If the kernel dies or is restarted, the agent's tools and variables are sent again before
the next action.
"""

from __future__ import annotations

import ast
import base64
import io
from typing import Any

try:
    import PIL.Image
    from smolagents.local_python_executor import CodeOutput
    from smolagents.memory import ActionStep
    from smolagents.monitoring import AgentLogger, LogLevel
    from smolagents.remote_executors import RemotePythonExecutor
    from smolagents.tools import Tool
    from smolagents.utils import AgentError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "codebox's smolagents executor needs smolagents: pip install 'codebox[smolagents]'"
    ) from exc

from ..base import BaseBox
from ..schema import CodeBoxOutput, OutputChunk
from ._adapters import box_from
from ._format import format_output

_OUTPUT_KINDS = ("stdout", "stderr", "error")
_IMAGE_KINDS = ("image/png", "image/jpeg")
# Set by the setup code (tools, variables): its absence after a kernel restart means the
# setup must be sent again.
_READY = "_codebox_smolagents_ready"
_NO_LIMIT = 1 << 62


class CodeboxExecutor(RemotePythonExecutor):
    """A smolagents ``RemotePythonExecutor`` that runs the agent's code in a codebox box.

    Args:
        additional_imports: Packages to install into the box first (``box.install``).
        logger: smolagents' logger (default: one at INFO level, as a ``CodeAgent``'s).
        allow_pickle: Let final answers that JSON cannot carry come back pickled (only
            for code you trust: unpickling runs code).
        box: The box to run on: a `LocalBox` (sandboxed or not, from a template or not)
            or a `CodeBox` of a server. The caller keeps it: `cleanup` leaves it running.
        timeout: Seconds one code action may run before it is interrupted (default: the
            box's ``run_timeout``, no limit). The agent sees a ``TimeoutError`` and its
            variables are kept.
        **box_options: Without ``box``, the arguments of the box to make (``sandbox=True``,
            ``api_key=...``, ...); `cleanup` stops it.
    """

    def __init__(
        self,
        additional_imports: list[str] | None = None,
        logger: AgentLogger | None = None,
        allow_pickle: bool = False,
        *,
        box: BaseBox | None = None,
        timeout: float | None = None,
        **box_options: Any,
    ) -> None:
        self.box, self._owns_box = box_from(box, box_options)
        self.timeout = timeout
        self.images: list[PIL.Image.Image] = []
        """Images the last code action showed, until `attach_images` hands them over."""
        self._setup: dict[str, str] = {}
        self._recording: str | None = None
        self._maybe_restarted = False
        super().__init__(additional_imports or [], logger or AgentLogger(LogLevel.INFO),
                         allow_pickle)
        self.installed_packages = self.install_packages(additional_imports or [])

    # -- what smolagents calls ------------------------------------------------------------

    def run_code_raise_errors(self, code: str) -> CodeOutput:
        """Run one code action in the box.

        Returns:
            Its printed output (``logs``), the value of its last expression (an image as a
            ``PIL.Image``), or the final answer it gave.

        Raises:
            AgentError: The code failed (its output so far and the traceback in the
                message), ran out of time, or the kernel died.
        """
        if self._recording is not None:  # tools or variables: sent again after a restart
            self._setup[self._recording] = f"{code}\n{_READY} = True"
            code = self._setup[self._recording]
        else:
            self._restore_setup()
        return self._code_output(self.box.run(code, timeout=self.timeout), code)

    def send_tools(self, tools: dict[str, Tool]) -> None:
        """Define the agent's tools in the kernel (and install what they require)."""
        self._recording = "tools"
        try:
            super().send_tools(tools)
        finally:
            self._recording = None

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Bind the agent's state variables in the kernel."""
        self._recording = "variables"
        try:
            super().send_variables(variables)
        finally:
            self._recording = None

    def install_packages(self, additional_imports: list[str]) -> list[str]:
        """Install packages into the box with its own installer (``box.install``)."""
        if additional_imports:
            self.logger.log(str(self.box.install(*additional_imports)), level=LogLevel.INFO)
        return list(additional_imports)

    def cleanup(self) -> None:
        """Stop the box if this executor made it (a given box is left to its owner)."""
        if self._owns_box:
            self.box.stop()

    def delete(self) -> None:
        """The same as `cleanup`."""
        self.cleanup()

    # -- what codebox adds ----------------------------------------------------------------

    def attach_images(self, memory_step: ActionStep) -> None:
        """A ``CodeAgent`` step callback: give the model the images the step's code showed
        (``step_callbacks=[executor.attach_images]``)."""
        if self.images:
            memory_step.observations_images = [*(memory_step.observations_images or []),
                                               *self.images]
            self.images = []

    def restart(self) -> None:
        """Restart the box's kernel (its variables are lost) and send the agent's tools and
        variables again."""
        self.box.restart()
        self._maybe_restarted = True
        self._restore_setup()

    # -- inside ---------------------------------------------------------------------------

    def _restore_setup(self) -> None:
        if not (self._maybe_restarted and self._setup):
            return
        self._maybe_restarted = False
        probe = self.box.run(f"{_READY!r} in globals()", timeout=self.timeout)
        if probe.content.strip() == "True":
            return
        self.logger.log("The kernel restarted: sending the tools and variables again",
                        level=LogLevel.INFO)
        for code in self._setup.values():
            self._code_output(self.box.run(code, timeout=self.timeout), code)

    def _code_output(self, out: CodeBoxOutput, code: str) -> CodeOutput:
        chunks = list(out.chunks)
        result = chunks.pop() if _has_result(code, chunks) else None
        shown = CodeBoxOutput.from_chunks([c for c in chunks if c.type != "error"])
        logs = format_output(shown, max_chars=_NO_LIMIT, max_images=_NO_LIMIT)[0] if (
            shown.chunks) else ""
        self.images = [_pil(c.content) for c in out.chunks if c.type in _IMAGE_KINDS]
        error = out.error
        if error is None:
            return CodeOutput(output=_value(result), logs=logs, is_final_answer=False)
        if error.name == self.FINAL_ANSWER_EXCEPTION:
            answer = self._deserialize_final_answer(error.value, self.allow_pickle)
            return CodeOutput(output=answer, logs=logs, is_final_answer=True)
        if error.name in ("KernelDiedError", "TimeoutError"):
            self._maybe_restarted = True  # checked, and set up again, before the next run
        told = format_output(CodeBoxOutput.from_chunks([], error=error), max_chars=_NO_LIMIT)[0]
        raise AgentError(f"{logs}Executing code yielded an error:\n{told}", self.logger)


def _has_result(code: str, chunks: list[OutputChunk]) -> bool:
    """Whether the last chunk is the value of the code's last expression (IPython shows it
    last, unless the line ends with a semicolon)."""
    if not chunks or chunks[-1].type in _OUTPUT_KINDS or code.rstrip().endswith(";"):
        return False
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False
    return bool(body) and isinstance(body[-1], ast.Expr)


def _value(chunk: OutputChunk | None) -> Any:
    if chunk is None:
        return None
    if chunk.type in _IMAGE_KINDS:
        return _pil(chunk.content)
    return chunk.content


def _pil(data: str) -> PIL.Image.Image:
    image = PIL.Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()  # read it now, while the bytes are at hand
    return image


__all__ = ["CodeboxExecutor"]
