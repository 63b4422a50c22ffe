"""Plot a data set in a box and save the PNG.

    python examples/plot_dataset.py [OUTPUT_DIR]

The data set is the stock price table that matplotlib ships as sample data: it is read
here, uploaded into the box, plotted there with pandas and matplotlib, and the figure comes
back as a base64 PNG.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import matplotlib.cbook

from codebox import CodeBox

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("plot-output")

PLOT = """
import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

prices = pd.read_csv("stocks.csv", comment="#", parse_dates=["Date"], index_col="Date")
tech = prices[["AAPL", "MSFT", "IBM"]].dropna()
growth = tech / tech.iloc[0]            # growth of one dollar invested at the start
print(f"{len(tech)} months, {tech.index[0]:%Y-%m} to {tech.index[-1]:%Y-%m}")
print("final value of $1:", growth.iloc[-1].round(1).to_dict())

ax = growth.plot(logy=True, figsize=(8, 4.5), title="Growth of $1 (log scale)")
ax.set_xlabel("")
ax.set_ylabel("value")
plt.tight_layout()
plt.show()
"""


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    csv_path = matplotlib.cbook.get_sample_data("Stocks.csv", asfileobj=False)
    with CodeBox() as box:
        box.upload("stocks.csv", Path(csv_path).read_bytes())
        out = box.run(PLOT)
        if out.error:
            sys.exit(f"plotting failed:\n{out.error.traceback}")
        print(out.stdout, end="")
        png = OUT / "stocks.png"
        png.write_bytes(base64.b64decode(out.images[0]))
        print(f"saved {png} ({png.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
