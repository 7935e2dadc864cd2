"""Benchmark: eltmake-target-duckdb against target-duckdb 0.8.0 and the JSON-parse floor.

One run feeds the same file of Singer messages (one stream, ~200-byte records of several types,
a STATE every 10,000 records) to:

* the floor: ``cat messages | python -c "for line in sys.stdin: json.loads(line)"``;
* ``eltmake-target-duckdb`` (this repository's plugins/ on PYTHONPATH);
* ``target-duckdb==0.8.0`` from PyPI, installed into its own venv under ``.bench/`` with uv
  (or venv + pip when uv is missing).

It prints wall times, ratios, and the rows each target actually loaded, so a loss shows.
Usage: ``python bench/bench_target_duckdb.py [--records N] [--batch-size-rows N] [--repeat N]``.
Wall times are medians over ``--repeat`` rounds (target-duckdb: ``--their-repeat``), interleaved so
a busy machine slows every contender alike; the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
THEIRS = "target-duckdb==0.8.0"
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "customer": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"]},
        "qty": {"type": ["null", "integer"]},
        "paid": {"type": ["null", "boolean"]},
        "created_at": {"type": ["null", "string"], "format": "date-time"},
        "tags": {"type": ["null", "array"], "items": {"type": "string"}},
        "meta": {"type": ["null", "object"]},
        "note": {"type": ["null", "string"]},
    },
}


def write_messages(path: Path, records: int) -> None:
    """Write the Singer messages once per record count; later runs reuse the file."""
    rng = random.Random(42)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        schema = {"type": "SCHEMA", "stream": "orders", "schema": SCHEMA, "key_properties": ["id"]}
        out.write(orjson.dumps(schema) + b"\n")
        for i in range(records):
            record = {
                "id": i,
                "customer": f"customer-{rng.randrange(100_000):06d}",
                "amount": round(rng.random() * 1000, 2),
                "qty": rng.randrange(100),
                "paid": i % 3 == 0,
                "created_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                "tags": ["new", "gift"][: i % 3],
                "meta": {"source": "web", "v": i % 7},
                "note": None if i % 5 else "left at the door",
            }
            message = {"type": "RECORD", "stream": "orders", "record": record}
            out.write(orjson.dumps(message) + b"\n")
            if i % 10_000 == 9_999:
                state = {"type": "STATE", "value": {"bookmarks": {"orders": {"id": i}}}}
                out.write(orjson.dumps(state) + b"\n")
    tmp.rename(path)


def ensure_theirs() -> Path:
    """Install target-duckdb 0.8.0 into its own venv under .bench/ (once)."""
    venv = CACHE / "venv-target-duckdb-0.8.0"
    exe = venv / "bin" / "target-duckdb"
    if exe.exists():
        return exe
    if shutil.which("uv"):
        subprocess.run(["uv", "venv", "-q", str(venv)], check=True)
        subprocess.run(
            ["uv", "pip", "install", "-q", "--python", str(venv / "bin" / "python"), THEIRS],
            check=True,
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", THEIRS], check=True)
    return exe


def timed(command: str, env: dict[str, str], log: Path) -> float:
    """Run a shell pipeline; return its wall time (stdout discarded, stderr kept in ``log``)."""
    with open(log, "wb") as err:
        started = time.perf_counter()
        done = subprocess.run(command, shell=True, env=env, stdout=subprocess.DEVNULL, stderr=err)
        elapsed = time.perf_counter() - started
    if done.returncode:
        sys.stderr.write(log.read_text(errors="replace")[-2000:])
        sys.exit(f"bench: command failed with exit code {done.returncode}: {command}")
    return elapsed


def peak_rss_mb(command: str, env: dict[str, str], log: Path) -> tuple[float, float | None]:
    """Run ``command`` under /usr/bin/time when present: (wall seconds, peak RSS in MB or None)."""
    gnu_time = shutil.which("time", path="/usr/bin")
    if gnu_time is None:
        return timed(command, env, log), None
    rss = log.with_suffix(".rss")
    wall = timed(command.replace("{time}", f"{gnu_time} -o {rss} -f %M"), env, log)
    return wall, int(rss.read_text().split()[-1]) / 1024


def loaded(db: Path, table: str) -> tuple[int, int]:
    """(rows, distinct ids) in the loaded table."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows, ids = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
    finally:
        con.close()
    return rows, ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch-size-rows", type=int, default=100_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of floor and eltmake (medians are shown)"
    )
    parser.add_argument(
        "--their-repeat",
        type=int,
        default=1,
        help="rounds of target-duckdb 0.8.0 (slow; 0 skips it)",
    )
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # keep the cache out of git without touching others
    messages = CACHE / f"target-duckdb-messages-{args.records}.jsonl"
    if not messages.exists():
        print(f"writing {args.records:,} records to {messages} ...", flush=True)
        write_messages(messages, args.records)
    theirs = ensure_theirs()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "plugins"), env.get("PYTHONPATH")])
    )
    size_mb = messages.stat().st_size / 1e6
    print(f"records: {args.records:,} ({size_mb:.0f} MB of messages)")
    print(f"batch_size_rows: {args.batch_size_rows:,} (both targets)")
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}")
    print(f"python {sys.version.split()[0]}, duckdb {duckdb.__version__}, cores {os.cpu_count()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)

    floor_name, ours_name, theirs_name = (
        "floor: cat | python json.loads",
        "eltmake-target-duckdb",
        "target-duckdb 0.8.0",
    )
    walls: dict[str, list[float]] = {floor_name: [], ours_name: [], theirs_name: []}
    counts: dict[str, tuple[int, int]] = {}
    peaks: dict[str, float | None] = {}
    floor = (
        f"cat {messages} | {sys.executable} -c "
        "'import sys, json\nfor line in sys.stdin: json.loads(line)'"
    )
    targets = {ours_name: f"{sys.executable} -m eltmake_target_duckdb", theirs_name: str(theirs)}
    with tempfile.TemporaryDirectory(prefix="bench-target-duckdb-") as tmp:
        folder = Path(tmp)
        for round_ in range(max(args.repeat, args.their_repeat)):
            if round_ < args.repeat:
                walls[floor_name].append(timed(floor, env, folder / "floor.log"))
            for name, exe in targets.items():
                if round_ >= (args.repeat if name == ours_name else args.their_repeat):
                    continue
                db = folder / f"{name.split()[0]}-{round_}.duckdb"
                config = folder / f"{name.split()[0]}.json"
                settings = {
                    "path": str(db),
                    "default_target_schema": "raw",
                    "batch_size_rows": args.batch_size_rows,
                }
                config.write_bytes(orjson.dumps(settings))
                command = f"cat {messages} | {{time}} {exe} --config {config}"
                wall, rss = peak_rss_mb(command, env, folder / "target.log")
                walls[name].append(wall)
                counts[name] = loaded(db, "raw.orders")
                peaks[name] = max(filter(None, [peaks.get(name), rss]), default=None)
                db.unlink()
                print(f"  round {round_ + 1}: {name}: {wall:.2f} s", flush=True)

    walls = {name: times for name, times in walls.items() if times}
    median = {name: statistics.median(times) for name, times in walls.items()}
    floor_s = median[floor_name]
    print()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(
        f"{'':32} {'wall s':>8} {'x floor':>8} {'rows loaded':>12} {'lost':>8} {'peak MB':>8}  runs"
    )
    for name, times in walls.items():
        rows = f"{counts[name][0]:,}" if name in counts else "-"
        lost = f"{args.records - counts[name][1]:,}" if name in counts else "-"
        peak = peaks.get(name)
        shown = f"{peak:.0f}" if peak is not None else "-"
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{name:32} {median[name]:8.2f} {median[name] / floor_s:8.2f} {rows:>12} {lost:>8}"
            f" {shown:>8}  {runs}"
        )
    print()
    if theirs_name in median:
        ratio = median[theirs_name] / median[ours_name]
        print(f"target-duckdb 0.8.0 / eltmake-target-duckdb: {ratio:.2f}x")
    print(f"eltmake-target-duckdb / floor: {median[ours_name] / floor_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
