"""`codebox.cli._runner` (the logic of `codebox run`) on real boxes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from codebox.cli._runner import (
    EXIT_BOX_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMED_OUT,
    PROGRESS_MIN_BYTES,
    parse_download,
    parse_upload,
    run_command,
    run_script,
)

pytestmark = pytest.mark.integration


class Watched(io.StringIO):
    """A stdout that creates ``flag`` as soon as ``word`` is written to it."""

    def __init__(self, word: str, flag: Path) -> None:
        super().__init__()
        self.word, self.flag = word, flag

    def write(self, text: str) -> int:
        if self.word in text:
            self.flag.touch()
        return super().write(text)


def test_output_streams_while_the_script_runs(tmp_path):
    # The script waits until the runner has printed its first line: only output that is
    # written as it comes lets it finish before its deadline.
    flag = tmp_path / "seen"
    script = tmp_path / "wait.py"
    script.write_text(
        "import os, time\nprint('ready', flush=True)\ndeadline = time.monotonic() + 20\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    assert time.monotonic() < deadline, 'the runner did not stream'\n"
        "    time.sleep(0.01)\nprint('done')\n"
    )
    out, err = Watched("ready", flag), io.StringIO()
    assert run_script(script, stdout=out, stderr=err) == EXIT_OK, err.getvalue()
    assert out.getvalue() == "ready\ndone\n"


def test_a_failing_script_saves_images_prints_the_traceback_and_exits_1(tmp_path):
    script = tmp_path / "plot.py"
    script.write_text(
        "import sys\nimport matplotlib.pyplot as plt\nprint('one')\n"
        "plt.plot([1, 2]); plt.show()\nprint('warn', file=sys.stderr)\n"
        "plt.plot([2, 1]); plt.show()\nraise KeyError('k')\n"
    )
    images = tmp_path / "imgs"
    (images).mkdir()
    (images / "image-1.png").write_bytes(b"older run")
    out, err = io.StringIO(), io.StringIO()
    assert run_script(script, images_dir=images, stdout=out, stderr=err) == EXIT_FAILED
    assert out.getvalue() == "one\n"
    lines = err.getvalue().splitlines()
    assert lines[0] == f"[image saved: {images / 'image-2.png'}]"
    assert lines[1] == "warn"
    assert lines[2] == f"[image saved: {images / 'image-3.png'}]"
    assert "----> 7 raise KeyError('k')" in err.getvalue()
    assert lines[-1] == "KeyError: 'k'"
    assert (images / "image-1.png").read_bytes() == b"older run"  # never overwritten
    assert (images / "image-3.png").read_bytes()[:4] == b"\x89PNG"


def test_stdin_exit_codes_timeouts_and_unreadable_files(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = run_script("-", stdin=io.StringIO("print(6 * 7)\nimport sys; sys.exit(3)"),
                      stdout=out, stderr=err, images_dir=tmp_path)
    assert code == 3 and out.getvalue() == "42\n"
    assert run_script("-", stdin=io.StringIO("raise SystemExit(0)"), stdout=out,
                      stderr=err) == EXIT_OK
    err = io.StringIO()
    assert run_script("-", stdin=io.StringIO("import time; time.sleep(30)"), timeout=0.5,
                      stdout=out, stderr=err) == EXIT_FAILED
    assert "TimeoutError" in err.getvalue()
    err = io.StringIO()
    assert run_script(tmp_path / "missing.py", stderr=err) == EXIT_BOX_ERROR
    assert "cannot read" in err.getvalue()
    assert not list(tmp_path.glob("*.png"))  # no image, no file


def test_files_go_up_before_and_come_back_after_with_progress(tmp_path):
    data = bytes(range(256)) * (PROGRESS_MIN_BYTES // 256 + 10)
    (tmp_path / "big.bin").write_bytes(data)
    script = tmp_path / "copy.py"
    script.write_text("import os\nos.makedirs('out', exist_ok=True)\n"
                      "open('out/copy.bin', 'wb').write(open('in/big.bin', 'rb').read()[::-1])\n"
                      "raise ValueError('after writing')\n")
    out, err = io.StringIO(), io.StringIO()
    code = run_script(script, stdout=out, stderr=err, progress=True,
                      uploads=[parse_upload(f"{tmp_path / 'big.bin'}:in/big.bin")],
                      downloads=[parse_download(f"out/copy.bin:{tmp_path / 'back' / 'c.bin'}")])
    # The script failed, and what it wrote still came back.
    assert code == EXIT_FAILED and (tmp_path / "back" / "c.bin").read_bytes() == data[::-1]
    assert "upload in/big.bin: 100%" in err.getvalue()
    assert "download out/copy.bin: 100%" in err.getvalue()
    quiet = io.StringIO()
    assert run_script("-", stdin=io.StringIO("1"), stdout=out, stderr=quiet,
                      downloads=[parse_download("missing.bin")]) == EXIT_BOX_ERROR
    assert "missing.bin" in quiet.getvalue() and "%" not in quiet.getvalue()


def test_a_command_exits_with_its_own_code(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert run_command("echo out; echo err >&2; exit 5", stdout=out, stderr=err) == 5
    assert (out.getvalue(), err.getvalue()) == ("out\n", "err\n")
    out = io.StringIO()
    assert run_command(["printf", "%s", "a b"], stdout=out, stderr=err) == 0
    assert out.getvalue() == "a b"
    err = io.StringIO()
    assert run_command("sleep 30", timeout=0.5, stderr=err) == EXIT_TIMED_OUT
    assert "timeout" in err.getvalue()
    assert run_command([], stderr=err) == EXIT_BOX_ERROR


def test_transfer_specs():
    assert parse_upload("data.csv") == (Path("data.csv"), "data.csv")
    assert parse_upload("dir/data.csv:in/d.csv") == (Path("dir/data.csv"), "in/d.csv")
    assert parse_download("out/r.csv") == ("out/r.csv", Path("r.csv"))
    assert parse_download("out/r.csv:here/x.csv") == ("out/r.csv", Path("here/x.csv"))
    for bad in [":x"]:
        with pytest.raises(ValueError):
            parse_download(bad)


def test_a_display_prints_its_text_and_a_clear_prints_nothing(tmp_path):
    script = tmp_path / "show.py"
    script.write_text(
        "from IPython.display import HTML, clear_output, display\n"
        "display({'text/html': '<b>x</b>', 'text/plain': 'alt of x'}, raw=True)\n"
        "display(HTML('<i>placeholder only</i>'))\n"
        "print('before', flush=True)\nclear_output()\nprint('after')\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_script(script, stdout=out, stderr=err) == EXIT_OK, err.getvalue()
    # What was printed stays printed: a terminal cannot take it back.
    assert out.getvalue() == "alt of x\nbefore\nafter\n"
    assert err.getvalue() == "[text/html output not shown: 23 characters]\n"
