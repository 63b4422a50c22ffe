"""Outputs as Jupyter means them: what applying clear_output and display updates costs.

    python benchmarks/outputs.py [--json results.json] [--quick]

Reference: nbclient (`NotebookClient.execute_cell` on a kernel of its own, started once),
running the same cells and keeping the same outputs. Each figure is the median wall time
of a cell, codebox's `LocalBox.run` beside nbclient, taking turns in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import nbformat
from nbclient import NotebookClient
from run import Figure, report

from codebox import LocalBox

N = 1000
CELLS = {
    f"a progress loop: {N} x clear_output(wait=True) + print":
        "from IPython.display import clear_output\n"
        f"for i in range({N}):\n    clear_output(wait=True)\n    print(i)",
    f"a display updated {N} times":
        "from IPython.display import display\nh = display(0, display_id=True)\n"
        f"for i in range({N}):\n    h.update(i)",
    f"{N} prints, each flushed":
        f"for i in range({N}):\n    print(i, flush=True)",
}


def measure(samples: int) -> list[Figure]:
    figures = []
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c)
                                               for c in CELLS.values()])
    client = NotebookClient(notebook, timeout=120)
    with LocalBox() as box, client.setup_kernel():
        box.run("1")
        for index, (name, code) in enumerate(CELLS.items()):
            ours, theirs = [], []
            for _ in range(samples):
                t = time.perf_counter()
                out = box.run(code, timeout=120)
                ours.append(time.perf_counter() - t)
                cell = notebook.cells[index]
                t = time.perf_counter()
                client.execute_cell(cell, index)
                theirs.append(time.perf_counter() - t)
            ms, ref = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
            kept = len(out.chunks), len(cell.outputs)
            figures.append(Figure(name, ms, ref, "ms", "<= 1.25x nbclient", ms <= 1.25 * ref,
                                  f"chunks kept by codebox / outputs kept by nbclient: "
                                  f"{kept[0]} / {kept[1]}"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/outputs.json")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    report(measure(5 if args.quick else 21), args.json)


if __name__ == "__main__":
    main()
