"""An agent's chores in a box: shell commands and file operations.

    python examples/shell_agent.py [OUT_DIR]

Agents do more than run Python: they grep, run test suites, pack archives and tidy up.
Here a small project is uploaded, then the calls a model would make with codebox's tools
(``run_shell``, ``remove_file``, ...) are carried out by `execute_tool_call`, printing what
the model would read. The same box is then driven directly: `shell` with ``cwd`` and
``env``, a live `stream_shell`, a timeout that ends a runaway command, and the file
operations `make_dir`, `rename`, `file_info`, `exists` and `remove`. The archive it builds
is downloaded to OUT_DIR (default: ``shell-agent-output``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from codebox import CodeBox
from codebox.integrations.tools import execute_tool_call

PROJECT = {
    "calc/ops.py": "def add(a, b):\n    return a + b\n\n\n"
                   "def div(a, b):\n    # TODO: say something kinder than ZeroDivisionError\n"
                   "    return a / b\n",
    "calc/__init__.py": "",
    "tests/__init__.py": "",
    "tests/test_ops.py": "import unittest\n\nfrom calc.ops import add, div\n\n\n"
                         "class T(unittest.TestCase):\n"
                         "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
                         "    def test_div(self):\n        self.assertEqual(div(6, 3), 2)\n",
    "build/stale.o": "old build output",
}

# What a model would ask for, in the plain {"name", "arguments"} shape.
CALLS = [
    {"name": "run_shell", "arguments": {"command": "grep -rn TODO --include=*.py .",
                                        "cwd": "project"}},
    {"name": "run_shell", "arguments": {"command": "python3 -m unittest 2>&1 | tail -3",
                                        "cwd": "project"}},
    {"name": "remove_file", "arguments": {"file_name": "project/build"}},
    {"name": "run_shell", "arguments": {"command": "ls nonexistent"}},  # a failure is data
    {"name": "list_files", "arguments": {}},
]


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "shell-agent-output")
    with CodeBox() as box:
        for name, text in PROJECT.items():
            box.upload(f"project/{name}", text)

        print("== tool calls, as a model sees them")
        for call in CALLS:
            result = execute_tool_call(box, call)
            status = "error" if result.is_error else "ok"
            print(f"-> {call['name']} {call['arguments']}\n<- [{status}] {result.text}\n")

        print("== the same box, driven directly")
        run = box.shell(["python3", "-c", "import os; print(os.environ['STAGE'])"],
                        env={"STAGE": "packaging"})
        print(f"stage: {run.stdout.strip()} (exit {run.exit_code})")
        box.make_dir("dist")
        with box.stream_shell("for f in calc tests; do echo packing $f; sleep 0.2; done; "
                              "tar czf ../dist/project.tgz calc tests", cwd="project") as stream:
            for chunk in stream:
                print(f"  live {chunk.type}: {chunk.content.strip()}")
        print(f"tar exited with {stream.result.exit_code}")
        archive = box.rename("dist/project.tgz", "dist/calc-1.0.tgz")
        info = box.file_info(archive.name)
        when = f"{info.modified:%Y-%m-%d %H:%M}" if info.modified else "?"
        print(f"built {info.name}: {info.size} bytes, modified {when} UTC")

        runaway = box.shell("echo working; sleep 600", timeout=1)
        print(f"runaway command: timed_out={runaway.timed_out}, said {runaway.stdout.strip()!r}")

        out_dir.mkdir(parents=True, exist_ok=True)
        saved = box.download(info.name).save(out_dir / "calc-1.0.tgz")
        box.remove("project")
        print(f"downloaded to {saved}; project still in the box: {box.exists('project')}")


if __name__ == "__main__":
    main()
