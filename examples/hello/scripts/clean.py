"""Drop rows without an amount; write out/clean.csv."""

import csv
import glob

rows = []
for path in sorted(glob.glob("data/*.csv")):
    with open(path, newline="") as f:
        rows += [r for r in csv.DictReader(f) if r["amount"].strip()]
with open("out/clean.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["id", "country", "amount"])
    w.writeheader()
    w.writerows(rows)
print(f"{len(rows)} valid rows")
