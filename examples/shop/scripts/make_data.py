"""Write the shop's data files: customers, orders and payments as CSV.

Run once to (re)create ``data/``; the files are committed, so the example needs no network and
every build, test and benchmark sees the same rows. Deterministic: a fixed seed and no clock, so
running it again rewrites identical files (and eltmake, which keys on content, re-runs nothing).

    python scripts/make_data.py [--customers 500] [--orders 3000]

Amounts are integer cents, so sums in the warehouse compare exactly with sums over these files.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from pathlib import Path

FIRST = "Ada Alan Barbara Claude Dennis Edsger Frances Grace Guido Hedy John Ken Linus Margaret Niklaus Radia Rob Sophie Tim Yukihiro".split()
LAST = "Lovelace Turing Liskov Shannon Ritchie Dijkstra Allen Hopper Rossum Lamarr Backus Thompson Torvalds Hamilton Wirth Perlman Pike Wilson Berners-Lee Matsumoto".split()
COUNTRIES = ["DE", "FR", "GB", "NL", "PL", "SE", "US", "JP", "BR", "IN"]
STATUSES = ["placed", "shipped", "completed", "completed", "completed", "returned"]
METHODS = ["credit_card", "credit_card", "bank_transfer", "gift_card", "coupon"]
START = dt.date(2024, 1, 1)


def make(customers: int, orders: int, seed: int = 42) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    cust = []
    for i in range(1, customers + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        cust.append(
            {
                "id": i,
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}.{i}@example.com".lower(),
                "country": rng.choice(COUNTRIES),
                "signed_up_at": (START + dt.timedelta(days=rng.randrange(365))).isoformat(),
            }
        )
    ords, pays = [], []
    for i in range(1, orders + 1):
        customer = rng.randrange(1, customers + 1)
        signed_up = dt.date.fromisoformat(cust[customer - 1]["signed_up_at"])
        ordered = signed_up + dt.timedelta(days=rng.randrange(400))
        ords.append(
            {
                "id": i,
                "customer_id": customer,
                "ordered_at": ordered.isoformat(),
                "status": rng.choice(STATUSES),
            }
        )
        total = rng.randrange(500, 25_000)  # cents
        # Most orders are paid at once; some in two parts, a few with a coupon on top.
        parts = [total] if rng.random() < 0.8 else [total // 2, total - total // 2]
        for part in parts:
            pays.append(
                {
                    "id": len(pays) + 1,
                    "order_id": i,
                    "method": rng.choice(METHODS),
                    "amount_cents": part,
                    "paid_at": (ordered + dt.timedelta(days=rng.randrange(3))).isoformat(),
                }
            )
    return {"customers": cust, "orders": ords, "payments": pays}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500)
    ap.add_argument("--orders", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in make(args.customers, args.orders).items():
        path = args.out / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
