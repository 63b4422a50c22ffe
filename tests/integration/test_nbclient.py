"""What `run` returns against what nbclient keeps in a notebook cell's outputs, for cells
that display, clear and update: the same cells, the same outputs.

nbclient runs the cells in a kernel of its own; a `LocalBox` runs them in another. Streams
are compared joined per run of one stream (how a kernel splits them into messages is
timing), displays by their whole MIME bundle, errors by name and value.
"""

from __future__ import annotations

from typing import Any

import nbclient
import nbformat
import pytest

from codebox import CodeBoxOutput, LocalBox

CELLS = [
    "print('a')\n1 + 1",
    "import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 2)); plt.plot([1, 2]); plt.show()",
    "from IPython.display import display, clear_output, HTML, JSON, Markdown\n"
    "import pandas as pd\ndisplay(pd.DataFrame({'a': [1, 2]}))\npd.Series([3])",
    "for i in range(10):\n    clear_output()\n    print(i)",
    "print('a')\nclear_output(wait=True)\nprint('b')\nclear_output(wait=True)",
    "h = display(HTML('<b>1</b>'), display_id=True)\nprint('between')\n"
    "h.update(HTML('<b>2</b>'))\nh.update(HTML('<b>3</b>'))",
    "h = display('gone', display_id=True)\nclear_output()\nh.update('back')\nprint('after')",
    "display(JSON({'k': [1]}), Markdown('# t'))\n"
    "display({'text/plain': 'alt', 'image/svg+xml': '<svg/>'}, raw=True)",
    "import sys\nprint('x')\nprint('warn', file=sys.stderr)\nraise ValueError('bad')",
]


def _merged(items: list[tuple]) -> list[tuple]:
    """Adjacent pieces of one stream joined."""
    out: list[tuple] = []
    for item in items:
        if item[0] == "stream" and out and out[-1][:2] == item[:2]:
            out[-1] = (*item[:2], out[-1][2] + item[2])
        else:
            out.append(item)
    return out


def notebook_view(outputs: list[Any]) -> list[tuple]:
    items: list[tuple] = []
    for o in outputs:
        if o.output_type == "stream":
            items.append(("stream", o.name, o.text))
        elif o.output_type in ("display_data", "execute_result"):
            items.append(("display", dict(o.data)))
        elif o.output_type == "error":
            items.append(("error", o.ename, o.evalue))
    return _merged(items)


def codebox_view(out: CodeBoxOutput) -> list[tuple]:
    items: list[tuple] = []
    for c in out.chunks:
        if c.type in ("stdout", "stderr"):
            items.append(("stream", c.type, c.content))
        elif c.type == "error":
            assert out.error is not None
            items.append(("error", out.error.name, out.error.value))
        else:
            items.append(("display", c.data))
    return _merged(items)


@pytest.fixture(scope="module")
def both():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nbclient.NotebookClient(notebook, timeout=60, allow_errors=True).execute()
    with LocalBox() as box:
        runs = [box.run(code, timeout=60) for code in CELLS]
    return notebook.cells, runs


@pytest.mark.parametrize("index", range(len(CELLS)),
                         ids=[c.splitlines()[-1][:40] for c in CELLS])
def test_run_returns_what_nbclient_keeps(both, index):
    cells, runs = both
    assert codebox_view(runs[index]) == notebook_view(cells[index].outputs)
