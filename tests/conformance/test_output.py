"""Output: every chunk in order, errors as data, images, rich display, large prints,
streaming while the code runs."""

from __future__ import annotations

import base64
import socket

import pytest

pytestmark = pytest.mark.integration


def test_result_views_and_state(box):
    assert box.run("x = 40").content == ""
    out = box.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nx + 2")
    assert [(c.type, c.content) for c in out.chunks] == [
        ("stdout", "out\n"), ("stderr", "err\n"), ("text", "42")]
    assert (out.stdout, out.stderr, out.type, out.content) == ("out\n", "err\n", "text",
                                                               "out\nerr\n42")
    assert out.error is None and isinstance(out.execution_count, int) and not out.truncated
    assert out == "out\nerr\n42" and str(out) == out.content


def test_an_error_is_data_with_a_plain_traceback(box):
    out = box.run("def f():\n    raise ValueError('bad input')\nprint('before')\nf()")
    assert out.type == "error" and out.content == "ValueError: bad input"
    assert out.stdout == "before\n"
    assert (out.error.name, out.error.value) == ("ValueError", "bad input")
    assert "raise ValueError" in out.error.traceback and "\x1b[" not in out.error.traceback
    assert out.chunks[-1].type == "error"
    assert box.run("1 + 1").content == "2"


def test_images_between_text_and_rich_display(box):
    out = box.run(
        "import matplotlib.pyplot as plt\nprint('before')\n"
        "plt.plot([1, 3, 2]); plt.show()\nplt.plot([2, 1]); plt.show()\nprint('after')")
    assert [c.type for c in out.chunks] == ["stdout", "image/png", "image/png", "stdout"]
    assert out.type == "image/png" and out.content == out.images[0] and len(out.images) == 2
    assert base64.b64decode(out.images[1])[:8] == b"\x89PNG\r\n\x1a\n"
    html = box.run("from IPython.display import HTML, display\ndisplay(HTML('<i>hi</i>'))")
    assert [(c.type, c.content) for c in html.chunks] == [("text/html", "<i>hi</i>")]


def test_ten_megabytes_of_print_arrive_whole(box):
    out = box.run("print('x' * 10_000_000)")
    assert len(out.stdout) == 10_000_001 and set(out.stdout.strip()) == {"x"}
    assert not out.truncated


def test_code_or_file_path(box, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("print('from a file')")
    assert box.run(file_path=script).stdout == "from a file\n"
    with pytest.raises(ValueError):
        box.run("1", file_path=script)
    with pytest.raises(ValueError):
        box.run()


def test_chunks_arrive_while_the_code_runs(box):
    # The code goes on only once the caller has seen its first output (or gives up): the
    # caller then opens a port (sandboxed boxes share no files with it, only a network).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ("import socket, time\nprint('first', flush=True)\ndeadline = time.monotonic() + 20\n"
            "seen = False\nwhile not seen and time.monotonic() < deadline:\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "        seen = True\n"
            "    except OSError:\n"
            "        time.sleep(0.01)\n"
            "print('second', seen)")
    seen, door = [], []

    def on_output(chunk):
        seen.append(chunk)
        if not door:
            door.append(socket.create_server(("127.0.0.1", port)))

    try:
        out = box.run(code, on_output=on_output, timeout=30)
    finally:
        for sock in door:
            sock.close()
    assert out.error is None and out.stdout == "first\nsecond True\n"
    assert "first\n".startswith(seen[0].content)
    assert "".join(c.content for c in seen) == out.stdout


def test_stream_yields_every_chunk_in_order(box):
    chunks = box.stream("import sys\nfor i in range(3):\n    print(i, flush=True)\n"
                        "    print('e', file=sys.stderr, flush=True)\n1/0")
    assert "".join(c.content for c in chunks if c.type == "stdout") == "0\n1\n2\n"
    assert "".join(c.content for c in chunks if c.type == "stderr") == "e\ne\ne\n"
    assert chunks[-1].type == "error" and chunks[-1].content.startswith("ZeroDivisionError")
