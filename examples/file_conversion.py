"""Convert a file in a box: upload a CSV, reshape it with pandas, download an XLSX.

    python examples/file_conversion.py [OUTPUT_DIR]

The box needs pandas and openpyxl (``pip install 'codebox[examples]'`` puts them beside a
LocalBox's kernel); with CODEBOX_API_KEY set it runs on a CodeBox server instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from codebox import CodeBox

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("file-conversion-output")

SALES_CSV = """\
date,region,product,units,price
2024-01-03,north,tea,12,3.5
2024-01-03,south,coffee,7,4.0
2024-01-04,north,coffee,9,4.0
2024-01-05,south,tea,15,3.5
2024-01-05,north,tea,4,3.5
2024-01-06,south,coffee,11,4.0
"""

CONVERT = """
import os
import pandas as pd

sales = pd.read_csv("input/sales.csv", parse_dates=["date"])
sales["revenue"] = sales["units"] * sales["price"]
summary = sales.pivot_table(index="region", columns="product", values="revenue",
                            aggfunc="sum", fill_value=0)
os.makedirs("output", exist_ok=True)
with pd.ExcelWriter("output/sales.xlsx") as xlsx:
    sales.to_excel(xlsx, sheet_name="sales", index=False)
    summary.to_excel(xlsx, sheet_name="revenue by region")
print(summary.to_string())
"""


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with CodeBox() as box:
        uploaded = box.upload("input/sales.csv", SALES_CSV)
        print(f"uploaded {uploaded.name} ({uploaded.size} bytes)")

        out = box.run(CONVERT)
        if out.error:  # the code's failure is data: show it and stop
            sys.exit(f"conversion failed:\n{out.error.traceback}")
        print(out.stdout)

        xlsx = box.download("output/sales.xlsx")
        path = xlsx.save(OUT / "sales.xlsx")
        print(f"downloaded {xlsx.name} ({xlsx.size} bytes) to {path}")


if __name__ == "__main__":
    main()
