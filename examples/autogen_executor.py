"""A box as AutoGen's code executor.

    pip install "codebox[autogen]"
    python examples/autogen_executor.py [OUT_DIR]

`CodeboxCodeExecutor` is an autogen-core ``CodeExecutor``: give it to a
``CodeExecutorAgent`` or a ``PythonCodeExecutionTool`` (from ``autogen-agentchat`` and
``autogen-ext``) and they run their code blocks in the box. Here it is driven directly, the
way those agents drive it: Python blocks that share state, a failing block, a shell block,
a plot saved to OUT_DIR (default: ``autogen-output``), a block that runs out of time, and
the executor saved as a component config and loaded again.
"""

from __future__ import annotations

import asyncio
import sys

from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock

from codebox.integrations.autogen import CodeboxCodeExecutor

OUT = sys.argv[1] if len(sys.argv) > 1 else "autogen-output"


def python(*codes: str) -> list[CodeBlock]:
    return [CodeBlock(code=code, language="python") for code in codes]


async def main() -> None:
    token = CancellationToken()
    # A LocalBox, or a box on a server if CODEBOX_API_KEY is set; stopped at the end.
    async with CodeboxCodeExecutor(timeout=5, output_dir=OUT) as executor:
        result = await executor.execute_code_blocks(python(
            "sales = {'north': 120, 'south': 95}",
            "print('total:', sum(sales.values()))",
        ), token)
        print(f"[exit {result.exit_code}] {result.output.strip()}")

        result = await executor.execute_code_blocks(python("print(sales['east'])"), token)
        print(f"[exit {result.exit_code}] {result.output.strip().splitlines()[-1]}")

        shell = [CodeBlock(code="echo $((120 + 95)) from the shell", language="bash")]
        result = await executor.execute_code_blocks(shell, token)
        print(f"[exit {result.exit_code}] {result.output.strip()}")

        result = await executor.execute_code_blocks(python(
            "import matplotlib.pyplot as plt\n"
            "plt.bar(list(sales), list(sales.values())); plt.show()"), token)
        print(f"[exit {result.exit_code}] saved {[f.name[-4:] for f in result.output_files]}"
              f" to {OUT}")

        try:
            await executor.execute_code_blocks(python("import time; time.sleep(60)"), token)
        except TimeoutError as exc:
            print("timed out:", str(exc).splitlines()[0])
        result = await executor.execute_code_blocks(python("print(len(sales), 'regions')"),
                                                    token)
        print(f"[exit {result.exit_code}] {result.output.strip()} (state kept)")

        config = executor.dump_component()
        print("component:", config.provider, config.config)
        loaded = CodeboxCodeExecutor.load_component(config)
        print("loaded again, timeout", loaded.timeout)


if __name__ == "__main__":
    asyncio.run(main())
