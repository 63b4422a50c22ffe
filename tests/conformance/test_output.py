"""Output: every chunk in order, errors as data, images, rich display, large prints,
streaming while the code runs."""

from __future__ import annotations

import base64
import threading

import pytest

from codebox.schema import CLEAR_OUTPUT, fold_chunks

pytestmark = pytest.mark.integration


def merged(chunks) -> list[tuple[str, str]]:
    """``(type, content)`` of each chunk, neighbouring stream chunks of one stream joined: a
    kernel may send one print as one stream message or two ("out", "\\n"), by timing."""
    out: list[tuple[str, str]] = []
    for c in chunks:
        if out and c.type in ("stdout", "stderr") and out[-1][0] == c.type:
            out[-1] = (c.type, out[-1][1] + c.content)
        else:
            out.append((c.type, c.content))
    return out


def test_result_views_and_state(box):
    assert box.run("x = 40").content == ""
    out = box.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nx + 2")
    assert merged(out.chunks) == [("stdout", "out\n"), ("stderr", "err\n"), ("text", "42")]
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
    assert [t for t, _ in merged(out.chunks)] == ["stdout", "image/png", "image/png", "stdout"]
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
    # caller then interrupts it, from a thread of its own (a sandboxed box shares no files
    # and no network with the caller; an interrupt reaches every box).
    # (The print is inside the try: the interrupt may land while its flush still waits.)
    code = ("import time\ntry:\n    print('first', flush=True)\n    time.sleep(20)\n"
            "    print('second', False)\nexcept KeyboardInterrupt:\n    print('second', True)")
    seen: list = []
    knock = threading.Thread(target=box.box.interrupt)

    def on_output(chunk):
        seen.append(chunk)
        if not knock.is_alive() and knock.ident is None:
            knock.start()

    try:
        out = box.run(code, on_output=on_output, timeout=30)
    finally:
        if knock.ident is not None:
            knock.join(10)
    assert out.error is None and out.stdout == "first\nsecond True\n"
    assert "first\n".startswith(seen[0].content)
    assert "".join(c.content for c in seen) == out.stdout


def test_stream_yields_every_chunk_in_order(box):
    chunks = box.stream("import sys\nfor i in range(3):\n    print(i, flush=True)\n"
                        "    print('e', file=sys.stderr, flush=True)\n1/0")
    assert "".join(c.content for c in chunks if c.type == "stdout") == "0\n1\n2\n"
    assert "".join(c.content for c in chunks if c.type == "stderr") == "e\ne\ne\n"
    assert chunks[-1].type == "error" and chunks[-1].content.startswith("ZeroDivisionError")


# -- outputs as Jupyter means them -------------------------------------------------------------

FIGURE = ("import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 2))\nplt.plot([1, 3, 2])\n"
          "plt.show()")


def test_a_figure_keeps_its_alt_text_beside_the_png(box):
    out = box.run(FIGURE)
    (chunk,) = out.chunks
    assert chunk.type == "image/png" and chunk.content == out.images[0] == out.content
    assert chunk.data["image/png"] == chunk.content
    assert chunk.data["text/plain"] == "<Figure size 200x200 with 1 Axes>"


def test_a_bundle_arrives_whole(box):
    out = box.run("from IPython.display import display\n"
                  "display({'text/plain': 'alt', 'text/html': '<b>rich</b>',\n"
                  "         'application/json': {'k': [1, 2]}}, raw=True)\n"
                  "class T:\n"
                  "    def _repr_html_(self): return '<table/>'\n"
                  "    def __repr__(self): return 'a table'\n"
                  "T()")
    shown, result = out.chunks
    assert (shown.type, shown.content) == ("text", "alt")
    assert shown.data == {"text/plain": "alt", "text/html": "<b>rich</b>",
                          "application/json": {"k": [1, 2]}}
    assert (result.type, result.content) == ("text", "a table")
    assert result.data == {"text/plain": "a table", "text/html": "<table/>"}
    assert out.content == "alta table"


def test_clear_output_leaves_only_the_last_print(box):
    code = ("from IPython.display import clear_output\nfor i in range(10):\n"
            "    clear_output()\n    print(i)")
    out = box.run(code)
    assert out.stdout == "9\n" and out.content == "9\n"
    assert merged(out.chunks) == [("stdout", "9\n")]  # nothing of the cleared prints
    wait = box.run("from IPython.display import clear_output\nprint('a')\n"
                   "clear_output(wait=True)\nprint('b')\nclear_output(wait=True)")
    assert wait.stdout == "b\n"


def test_an_updated_display_is_one_chunk(box):
    out = box.run("from IPython.display import display, HTML\n"
                  "h = display(HTML('<b>1</b>'), display_id=True)\nprint('between')\n"
                  "h.update(HTML('<b>2</b>'))\nh.update(HTML('<b>3</b>'))")
    assert merged(out.chunks) == [("text/html", "<b>3</b>"), ("stdout", "between\n")]
    assert out.chunks[0].display_id


def test_a_stream_folds_into_the_result(box):
    code = ("from IPython.display import display, clear_output\nprint('gone')\n"
            "clear_output()\nh = display('a', display_id='counter')\nprint('kept')\n"
            "h.update('b')\n" + FIGURE)
    live = box.stream(code)
    # How print splits its text into messages is the kernel's; the rest is fixed.
    assert [c.type for c in live if c.type != "stdout"] == [CLEAR_OUTPUT, "text", "text",
                                                           "image/png"]
    shown = [c for c in live if c.display_id == "counter"]
    assert [c.content for c in shown] == ["'a'", "'b'"]
    out = box.run(code)
    assert fold_chunks(live) == out.chunks
    assert out.chunks[0] == shown[1] and out.stdout == "kept\n" and out.images
