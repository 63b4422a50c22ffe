"""The `codebox` command: every subcommand has help; `codebox run` end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import codebox

CODEBOX = shutil.which("codebox", path=os.path.dirname(sys.executable)) or "codebox"


def cli(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CODEBOX_API_KEY"}
    return subprocess.run([CODEBOX, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


@pytest.mark.parametrize("command", [[], ["run"], ["shell"], ["serve"], ["mcp"]])
def test_every_command_has_help(command):
    out = cli(*command, "--help")
    assert out.returncode == 0 and "Usage: codebox" in out.stdout


def test_version():
    assert cli("--version").stdout.strip().endswith(codebox.__version__)


@pytest.mark.integration
def test_run_streams_output_saves_images_and_exits_nonzero_on_failure(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import matplotlib.pyplot as plt\n"
        "print('step one')\n"
        "plt.plot([1, 2]); plt.show()\n"
        "1 / 0\n"
    )
    out = cli("run", str(script), "--images-dir", str(tmp_path / "imgs"), cwd=tmp_path)
    assert out.returncode == 1
    assert "step one" in out.stdout and "ZeroDivisionError" in out.stdout + out.stderr
    assert [p.name for p in (tmp_path / "imgs").iterdir()] == ["image-1.png"]
    ok = cli("run", "-", stdin="print(6 * 7)\n", cwd=tmp_path)
    assert (ok.returncode, ok.stdout.strip()) == (0, "42")


@pytest.mark.integration
def test_shell_runs_one_command_with_files_in_and_out(tmp_path):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    out = cli("shell", "wc -l < in.txt | tee count.txt; exit 4", "--upload", "in.txt",
              "--download", "count.txt:result/count.txt", cwd=tmp_path)
    assert (out.returncode, out.stdout.strip()) == (4, "2")
    assert (tmp_path / "result" / "count.txt").read_text().strip() == "2"
    listed = cli("shell", "--", "ls", "-a", cwd=tmp_path)
    assert listed.returncode == 0 and "." in listed.stdout.split()
