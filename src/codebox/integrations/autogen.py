"""codebox as an AutoGen code executor (the ``codebox[autogen]`` extra, on ``autogen-core``).

    from autogen_core import CancellationToken
    from autogen_core.code_executor import CodeBlock
    from codebox.integrations.autogen import CodeboxCodeExecutor

    async with CodeboxCodeExecutor(sandbox=True) as executor:   # or box=my_box
        result = await executor.execute_code_blocks(
            [CodeBlock(code="print(6 * 7)", language="python")], CancellationToken())
        result.output                                           # "42\\n"

Give it to AutoGen's ``CodeExecutorAgent`` or ``PythonCodeExecutionTool`` like any
``CodeExecutor``. Python blocks run statefully in the box's kernel (as with AutoGen's
``JupyterCodeExecutor``), shell blocks (``bash``, ``sh``, ``shell``) run in the same box
with `BaseBox.shell`. Images and HTML that the code displays are saved as files in
``output_dir`` and listed in ``output_files``; their ``text/plain`` is in the output.

It is a serialisable component: ``executor.dump_component()`` gives a config that
``CodeboxCodeExecutor.load_component(config)`` turns back into an executor — on a new box
made from the same arguments, or, for a box that was given, on that same box (reattached
by its session id). The config never holds an API key or settings: the loaded executor
takes them from ``CODEBOX_*`` and ``.env``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

try:
    from autogen_core import CancellationToken, Component
    from autogen_core.code_executor import CodeBlock, CodeExecutor, CodeResult
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "codebox's AutoGen code executor needs autogen-core: pip install 'codebox[autogen]'"
    ) from exc
from typing import Self

from ..base import BaseBox
from ..sandbox import Sandbox
from ..schema import CodeBoxOutput, CommandResult, OutputChunk
from ._adapters import box_from

_PYTHON = ("python", "py", "python3")
_SHELL = ("bash", "sh", "shell")
_UNSAVED_SECRETS = ("api_key", "settings")
_IMAGE_FILES = {"image/png": ".png", "image/jpeg": ".jpg"}


@dataclass
class CodeboxCodeResult(CodeResult):
    """The result of running code blocks: AutoGen's ``CodeResult`` (``exit_code``,
    ``output``) and the files the code's images and HTML were saved to."""

    output_files: list[Path] = field(default_factory=list)


class CodeboxCodeExecutorConfig(BaseModel):
    """The configuration of a `CodeboxCodeExecutor` (what ``dump_component`` holds)."""

    timeout: float = 60
    output_dir: str | None = None
    box_options: dict[str, Any] = Field(default_factory=dict)
    """The arguments of the box to make (``sandbox``, ``base_url``, ...), JSON-ready."""
    session_id: str | None = None
    """A given box's session, reattached on load (`CodeBox.from_id`)."""
    base_url: str | None = None
    """The server of that session, if the box was a `CodeBox`."""


class CodeboxCodeExecutor(CodeExecutor, Component[CodeboxCodeExecutorConfig]):
    """An AutoGen ``CodeExecutor`` that runs code blocks in a codebox box.

    Args:
        box: The box to run on: a `LocalBox` (sandboxed or not, from a template or not)
            or a `CodeBox` of a server. The caller keeps it: `stop` leaves it running.
        timeout: Seconds one block may run (at least 1, default 60). A block that runs out
            of time is interrupted (the kernel keeps its variables) and
            ``execute_code_blocks`` raises ``asyncio.TimeoutError``, as the
            ``CodeExecutor`` contract says.
        output_dir: Where images and HTML the code displays are saved (default: a new
            temporary directory), made when the first one is saved.
        **box_options: Without ``box``, the arguments of the box to make (``sandbox=True``,
            ``api_key=...``, ...); `stop` stops it.

    Raises:
        ValueError: A timeout below 1 s, or both a box and the arguments of one.
    """

    component_config_schema = CodeboxCodeExecutorConfig
    component_provider_override = "codebox.integrations.autogen.CodeboxCodeExecutor"
    component_description = "Runs code blocks statefully in a codebox box."

    def __init__(
        self,
        *,
        box: BaseBox | None = None,
        timeout: float = 60,
        output_dir: str | Path | None = None,
        **box_options: Any,
    ) -> None:
        if timeout < 1:
            raise ValueError("Timeout must be greater than or equal to 1.")
        self._box, self._owns_box = box_from(box, box_options)
        self._box_options = box_options
        self._timeout = timeout
        self._output_dir = Path(output_dir) if output_dir is not None else None

    @property
    def box(self) -> BaseBox:
        """The box the code runs in."""
        return self._box

    @property
    def timeout(self) -> float:
        """Seconds one block may run."""
        return self._timeout

    @property
    def output_dir(self) -> Path:
        """Where images and HTML the code displays are saved."""
        if self._output_dir is None:
            self._output_dir = Path(tempfile.mkdtemp(prefix="codebox-autogen-"))
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return self._output_dir

    async def execute_code_blocks(
        self, code_blocks: list[CodeBlock], cancellation_token: CancellationToken
    ) -> CodeboxCodeResult:
        """Run the blocks in order, stopping at the first that fails.

        Returns:
            The exit code of the last block run (0, or 1 for Python code that raised, or
            the shell's exit code), the outputs of the blocks (joined by newlines) and the
            files saved.

        Raises:
            asyncio.TimeoutError: A block ran out of time (the kernel was interrupted).
            asyncio.CancelledError: ``cancellation_token`` was cancelled (the kernel was
                interrupted).
        """
        outputs: list[str] = []
        files: list[Path] = []
        exit_code = 0
        for block in code_blocks:
            task = asyncio.ensure_future(self._run_block(block))
            cancellation_token.link_future(task)
            result = await task
            exit_code = result.exit_code
            outputs.append(result.output)
            files += result.output_files
            if exit_code != 0:
                break
        return CodeboxCodeResult(exit_code=exit_code, output="\n".join(outputs),
                                 output_files=files)

    async def start(self) -> None:
        """Start the box (if it is not started yet)."""
        await self._box.astart()

    async def stop(self) -> None:
        """Stop the box if this executor made it (a given box is left to its owner)."""
        if self._owns_box:
            await self._box.astop()

    async def restart(self) -> None:
        """Restart the box's kernel: variables and imports are lost, files are kept."""
        await self._box.arestart()

    # -- serialisation ----------------------------------------------------------------------

    def _to_config(self) -> CodeboxCodeExecutorConfig:
        output_dir = str(self._output_dir) if self._output_dir is not None else None
        if self._owns_box:
            options = {k: _json_ready(v) for k, v in self._box_options.items()
                       if k not in _UNSAVED_SECRETS}
            return CodeboxCodeExecutorConfig(timeout=self._timeout, output_dir=output_dir,
                                             box_options=options)
        if self._box.session_id is None:
            raise ValueError("a given box is saved by its session id: start the executor "
                             "(or the box) before dumping its config")
        base_url = None if _is_local(self._box) else str(self._box.settings.base_url)
        return CodeboxCodeExecutorConfig(timeout=self._timeout, output_dir=output_dir,
                                         session_id=self._box.session_id, base_url=base_url)

    @classmethod
    def _from_config(cls, config: CodeboxCodeExecutorConfig) -> Self:
        if config.session_id is not None:
            from ..remote import CodeBox

            reattach = {"base_url": config.base_url} if config.base_url else {}
            box = CodeBox.from_id(config.session_id, **reattach)
            return cls(box=box, timeout=config.timeout, output_dir=config.output_dir)
        options = dict(config.box_options)
        if isinstance(options.get("sandbox"), dict):
            options["sandbox"] = Sandbox.model_validate(options["sandbox"])
        return cls(timeout=config.timeout, output_dir=config.output_dir, **options)

    # -- inside -----------------------------------------------------------------------------

    async def _run_block(self, block: CodeBlock) -> CodeboxCodeResult:
        language = block.language.lower()
        if language in _PYTHON:
            out = await self._box.arun(block.code, timeout=self._timeout)
            if out.error is not None and out.error.name == "TimeoutError":
                raise TimeoutError(f"{out.error.value}; output so far:\n{out.stdout}")
            return self._python_result(out)
        if language in _SHELL:
            command = await self._box.ashell(block.code, timeout=self._timeout)
            return _shell_result(command)
        return CodeboxCodeResult(exit_code=1, output=f"unsupported language {block.language!r}:"
                                 f" use one of {', '.join(_PYTHON + _SHELL)}")

    def _python_result(self, out: CodeBoxOutput) -> CodeboxCodeResult:
        outputs: list[str] = []
        files: list[Path] = []
        for chunk in out.chunks:
            if chunk.type in ("stdout", "stderr"):
                outputs.append(chunk.content)
            elif chunk.type == "error" and out.error is not None:
                outputs.append(out.error.traceback or str(out.error))
            elif chunk.type != "error":
                outputs += self._shown(chunk, files)
        return CodeboxCodeResult(exit_code=0 if out.error is None else 1,
                                 output="\n".join(outputs), output_files=files)

    def _shown(self, chunk: OutputChunk, files: list[Path]) -> list[str]:
        """The text of a display or result; its image or HTML saved to ``files``."""
        bundle = chunk.data or {("text/plain" if chunk.type == "text" else chunk.type):
                                chunk.content}
        texts: list[str] = []
        image = next((m for m in _IMAGE_FILES if m in bundle), None)
        for mime, content in bundle.items():
            if mime == "text/plain":
                texts.append(content if isinstance(content, str) else "".join(content))
            elif mime == image:
                files.append(self._save(base64.b64decode(content), _IMAGE_FILES[mime]))
            elif mime == "text/html":
                files.append(self._save(str(content).encode(), ".html"))
            elif mime not in _IMAGE_FILES:
                texts.append(content if isinstance(content, str) else json.dumps(content))
        return texts

    def _save(self, data: bytes, suffix: str) -> Path:
        path = self.output_dir / f"{uuid.uuid4().hex}{suffix}"
        path.write_bytes(data)
        return path.absolute()


def _shell_result(command: CommandResult) -> CodeboxCodeResult:
    if command.timed_out:
        raise TimeoutError(f"the command ran out of time; output so far:\n{command}")
    return CodeboxCodeResult(exit_code=command.exit_code, output=str(command))


def _is_local(box: BaseBox) -> bool:
    from ..remote import CodeBox

    return not isinstance(box, CodeBox)


def _json_ready(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


__all__ = ["CodeboxCodeExecutor", "CodeboxCodeExecutorConfig", "CodeboxCodeResult"]
