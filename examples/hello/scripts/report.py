"""Print an HTML table of out/totals.csv."""

import csv

with open("out/totals.csv", newline="") as f:
    rows = list(csv.DictReader(f))
cells = "".join(
    f"<tr><td>{r['country']}</td><td>{r['total']}</td><td>{r['sales']}</td></tr>" for r in rows
)
print(f"<html><body><h1>Sales per country</h1><table>{cells}</table></body></html>")
