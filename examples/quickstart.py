"""codebox in one minute: run code, make a plot, move a file in and out.

Runs against a LocalBox (a Jupyter kernel on this machine) by default. With
CODEBOX_API_KEY and CODEBOX_BASE_URL set, the same code runs on a CodeBox server.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from codebox import CodeBox

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart-output")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with CodeBox() as box:  # no API key: a LocalBox
        print(f"box: {box!r}")

        # Output comes back in order, stdout and stderr apart; state is kept between runs.
        out = box.run("import sys\nx = 6 * 7\nprint('x is', x)\nprint('careful', file=sys.stderr)")
        print("stdout:", out.stdout.strip(), "| stderr:", out.stderr.strip())
        print("x * 2 =", box.run("x * 2").content)

        # A failure of the code is data, with a plain-text traceback.
        failed = box.run("1 / 0")
        print("error:", failed.error.name, "-", failed.error.value)

        # Plots arrive as base64 PNGs.
        plot = box.run(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 4, 9, 16], marker='o'); plt.title('squares'); plt.show()"
        )
        png = OUT / "plot.png"
        png.write_bytes(base64.b64decode(plot.images[0]))
        print(f"plot: {png} ({png.stat().st_size} bytes)")

        # Files go in and out through the kernel.
        box.upload("data/numbers.csv", "n\n1\n2\n3\n")
        total = "import csv\nsum(int(r['n']) for r in csv.DictReader(open('data/numbers.csv')))"
        print(box.run(total).content)
        box.run("open('data/report.txt', 'w').write('total: 6\\n')")
        report = box.download("data/report.txt")
        report.save(OUT / "report.txt")
        print("files:", [(f.name, f.size) for f in box.list_files()])
        print("downloaded:", report.content.decode().strip())


if __name__ == "__main__":
    main()
