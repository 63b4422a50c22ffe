"""Every example runs, as a user would run it, and does what it says.

(`quickstart.py` is run by tests/test_repo.py, with the README's promises.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.integration


def run_example(name: str, tmp_path: Path) -> str:
    """Run ``examples/<name>.py OUT_DIR`` in ``tmp_path`` with no API keys; its stdout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CODEBOX_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def check_file_conversion(stdout: str, tmp_path: Path) -> None:
    import pandas as pd

    xlsx = tmp_path / "out" / "sales.xlsx"
    sheets = pd.read_excel(xlsx, sheet_name=None, index_col=None)
    assert list(sheets) == ["sales", "revenue by region"]
    assert len(sheets["sales"]) == 6 and "revenue" in sheets["sales"].columns
    revenue = sheets["revenue by region"].set_index("region")
    assert revenue.loc["north"].to_dict() == {"coffee": 36.0, "tea": 56.0}
    assert revenue.loc["south"].to_dict() == {"coffee": 72.0, "tea": 52.5}
    assert f"({xlsx.stat().st_size} bytes)" in stdout


def check_plot_dataset(stdout: str, tmp_path: Path) -> None:
    png = (tmp_path / "out" / "stocks.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert re.search(r"\d+ months, 1990-01 to \d{4}-\d\d", stdout)


def check_parallel_boxes(stdout: str, tmp_path: Path) -> None:
    ids = re.findall(r"^box (\d): (\w+)\.\.\. pi ~ ", stdout, re.MULTILINE)
    assert sorted(int(n) for n, _ in ids) == list(range(10))
    assert len({sid for _, sid in ids}) == 10  # ten boxes, ten sessions
    pi = float(re.search(r"pi ~ (\d\.\d+) in", stdout).group(1))
    assert abs(pi - 3.1416) < 0.01


def check_restore_session(stdout: str, tmp_path: Path) -> None:
    sid = re.search(r"started session (\w+)", stdout).group(1)
    assert f"session {sid}: 2 ['hello', 'how are you?'] | notes: remember the milk" in stdout
    assert f"session {sid}: 3 ['hello', 'how are you?', 'bye']" in stdout
    assert "status: ['stopped']" in stdout


def check_streaming(stdout: str, tmp_path: Path) -> None:
    first, total = map(float, re.search(
        r"first output after ([\d.]+) s, the run took ([\d.]+) s", stdout).groups())
    assert first < total / 2  # the first step arrived long before the run ended
    assert stdout.count("stdout: step") == 5 and "stdout: async 2" in stdout
    assert "the result holds 'a\\nb\\n'" in stdout


def check_agent_loop(stdout: str, tmp_path: Path) -> None:
    assert "scripted model" in stdout
    for vendor in ("openai", "anthropic"):
        part = stdout.split(f"== {vendor} format", 1)[1].split("== ", 1)[0]
        # The model saw the error with the line that failed, then the fixed run's plot.
        assert "<- run_python [error]" in part and "df['temperature'].mean()" in part
        assert "KeyError: 'temperature'" in part
        assert "<- run_python [ok] + 1 image(s)" in part and "mean: 17.86 C" in part
        assert "answer: Done. summary.txt says: 7 days, mean 17.86 C, warmest 21.0 C" in part


def check_shell_agent(stdout: str, tmp_path: Path) -> None:
    import tarfile

    assert "calc/ops.py:6:    # TODO" in stdout
    assert "Ran 2 tests" in stdout and "Removed project/build." in stdout
    assert "<- [error] ls: cannot access 'nonexistent'" in stdout and "[exit code 2]" in stdout
    assert "project/build/stale.o" not in stdout
    assert "stage: packaging (exit 0)" in stdout
    assert stdout.index("live stdout: packing calc") < stdout.index("tar exited with 0")
    assert "runaway command: timed_out=True, said 'working'" in stdout
    assert "project still in the box: False" in stdout
    with tarfile.open(tmp_path / "out" / "calc-1.0.tgz") as archive:
        assert {"calc/ops.py", "tests/test_ops.py"} <= set(archive.getnames())


def check_smolagents_agent(stdout: str, tmp_path: Path) -> None:
    assert "step 1: Execution logs: | 7 days" in stdout  # state, then used by later steps
    assert "NameError: name 'temp' is not defined" in stdout  # the model saw its mistake
    assert "17.86 | Last output" in stdout and "(+ 1 image)" in stdout
    assert stdout.endswith("answer: The mean temperature was 17.86 C.\n")


def check_autogen_executor(stdout: str, tmp_path: Path) -> None:
    assert "[exit 0] total: 215\n[exit 1] KeyError: 'east'" in stdout
    assert "[exit 0] 215 from the shell" in stdout
    [png] = (tmp_path / "out").glob("*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timed out: the run exceeded its timeout of 5 s" in stdout
    assert "[exit 0] 2 regions (state kept)" in stdout
    assert "component: codebox.integrations.autogen.CodeboxCodeExecutor" in stdout
    assert "loaded again, timeout 5.0" in stdout


def check_openai_sandbox_agent(stdout: str, tmp_path: Path) -> None:
    assert "<- 5 sales.csv" in stdout  # the manifest's file, in the box
    assert "<- KeyError: 'revenu'" in stdout
    # run_python's value, then the shell reading the file Python wrote
    assert stdout.count("<- {'north': 255, 'south': 183}") == 2
    assert "answer: North made 255 and south 183" in stdout


CHECKS = {
    "file_conversion": check_file_conversion,
    "plot_dataset": check_plot_dataset,
    "parallel_boxes": check_parallel_boxes,
    "restore_session": check_restore_session,
    "streaming": check_streaming,
    "agent_loop": check_agent_loop,
    "shell_agent": check_shell_agent,
    "smolagents_agent": check_smolagents_agent,
    "autogen_executor": check_autogen_executor,
    "openai_sandbox_agent": check_openai_sandbox_agent,
}


def test_every_example_is_run_by_the_tests():
    examples = {p.stem for p in EXAMPLES.glob("*.py")}
    assert examples == set(CHECKS) | {"quickstart"}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example(name, tmp_path):
    CHECKS[name](run_example(name, tmp_path), tmp_path)
