"""A fault campaign: kill -9 at random instants, damaged files, hostile streams and project files.

Each trial injects one fault into a fresh project and checks what must hold afterwards:

* ``kill9-command``: eltmake is killed while a command step writes numbered lines; the step's
  processes must be gone, and the next build must leave exactly one complete run in the output.
* ``kill9-singer``: eltmake is killed while a scripted tap streams into eltmake-target-duckdb
  (STATE every 50 records); after the next build every record is in the warehouse exactly once
  and the saved bookmark is never past what the warehouse holds.
* ``damaged-file``: a file under ``.eltmake/`` is damaged; the state database must be refused
  with one line (exit 2), everything else must be rebuilt with at most a warning; never an
  internal error.
* ``hostile-stream``: the tap writes something no Singer target should take; the step must fail
  with one line naming the tool (exit 1), and the bookmark must not move.
* ``hostile-project``: a malformed project file; one line, exit 2.

Prints trials, held and failed per kind (and what failed). Run with the Python eltmake is
installed in: ``python bench/faults.py [--trials 20] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TAP = r'''#!/usr/bin/env python3
"""A scripted tap: ids 1..N in stream "items", a STATE every 50 records, resuming from --state."""
import json, sys, time
args = sys.argv[1:]
start = 0
if "--state" in args:
    state = json.load(open(args[args.index("--state") + 1]))
    start = state.get("bookmarks", {}).get("items", {}).get("id", 0)
n = int(open("n.txt").read())
mode = open("mode.txt").read().strip() if __import__("os").path.exists("mode.txt") else ""
out = sys.stdout
out.write(json.dumps({"type": "SCHEMA", "stream": "items", "key_properties": ["id"],
    "schema": {"properties": {"id": {"type": "integer"}, "v": {"type": "string"}}}}) + "\n")
if mode == "bad-json":
    out.write('{"type": "RECORD", "stream": "items", "record": {"id": 1,\n'); sys.exit(0)
if mode == "record-before-schema":
    out.write(json.dumps({"type": "RECORD", "stream": "other", "record": {"id": 1}}) + "\n"); sys.exit(0)
if mode == "not-utf8":
    out.buffer.write(b'{"type": "RECORD", "stream": "items", "record": {"id": 1, "v": "\xff\xfe"}}\n'); sys.exit(0)
if mode == "huge-number":
    out.write('{"type": "RECORD", "stream": "items", "record": {"id": 1e400}}\n'); sys.exit(0)
if mode == "deep":
    out.write('{"type": "RECORD", "stream": "items", "record": {"id": 1, "v": ' + "[" * 400 + "]" * 400 + '}}\n'); sys.exit(0)
if mode == "crash":
    out.write(json.dumps({"type": "RECORD", "stream": "items", "record": {"id": start + 1, "v": "x"}}) + "\n")
    out.flush(); sys.exit(3)
for i in range(start + 1, n + 1):
    out.write(json.dumps({"type": "RECORD", "stream": "items", "record": {"id": i, "v": f"v{i}"}}) + "\n")
    if i % 50 == 0:
        out.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"items": {"id": i}}}}) + "\n")
        out.flush()
        time.sleep(0.01)
out.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"items": {"id": n}}}}) + "\n")
'''

SINGER = """
[extractors.tap-script]
executable = "./tap.py"
capabilities = ["state"]

[loaders.duckdb]
executable = "eltmake-target-duckdb"
config = { path = "warehouse.duckdb", default_target_schema = "raw", batch_size_rows = 40 }

[targets.items]
extract = "tap-script"
load = "duckdb"
"""

COMMAND = """
[targets.lines]
run = "rm -f out.txt; for i in $(seq 1 40); do echo $i >> out.txt; sleep 0.02; done; echo done >> out.txt"
outputs = ["out.txt"]
"""

HOSTILE_PROJECTS = {
    "toml syntax": "[targets.a]\nrun = 'x'\ndeps = [\n",
    "unknown key": "[targets.a]\nrun = 'x'\ninptus = []\n",
    "wrong type": "[targets.a]\nrun = 3\n",
    "cycle": "[targets.a]\nrun='x'\ndeps=['b']\n[targets.b]\nrun='x'\ndeps=['a']\n",
    "output glob": "[targets.a]\nrun = 'x'\noutputs = ['*.csv']\n",
    "output outside": "[targets.a]\nrun = 'x'\noutputs = ['../x']\n",
    "output in .eltmake": "[targets.a]\nrun = 'x'\noutputs = ['.eltmake/x']\n",
    "output twice": "[targets.a]\nrun='x'\noutputs=['o']\n[targets.b]\nrun='x'\noutputs=['o']\n",
    "output is input": "[targets.a]\nrun='x'\ninputs=['o']\noutputs=['o']\n",
    "deep nesting": "[targets.a]\nrun = 'x'\ninputs = " + "[" * 3000 + "]" * 3000 + "\n",
    "binary": "\0\0\0",
    "not utf-8": "[targets.a]\nrun = '\xff'\n",
    "unset variable": "[targets.a]\nrun = '${ELTMAKE_FAULTS_UNSET}'\n",
}
DAMAGE = ["garbage", "truncated", "empty", "folder"]
FILES = ["state.db", "cache/cache.db", "graph.json", "project.json"]
STREAMS = ["bad-json", "record-before-schema", "not-utf8", "huge-number", "deep", "crash"]


def eltmake(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eltmake", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        errors="replace",
    )


def clean_failure(proc: subprocess.CompletedProcess, code: int) -> str:
    """'' when the run failed the way it should (exit code, no traceback), else what was wrong."""
    if proc.returncode != code:
        return f"exit {proc.returncode}, expected {code}: {proc.stderr.strip()[-200:]}"
    if "Traceback" in proc.stderr or "internal error" in (proc.stderr + proc.stdout):
        return f"internal error: {proc.stderr.strip()[-200:]}"
    return ""


def singer_project(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    (root / "eltmake.toml").write_text(SINGER)
    tap = root / "tap.py"
    tap.write_text(TAP)
    tap.chmod(0o755)
    (root / "n.txt").write_text(str(n))


def warehouse_ids(root: Path) -> list[int]:
    import duckdb

    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM raw.items ORDER BY id").fetchall()]
    finally:
        con.close()


def bookmark(root: Path) -> int:
    proc = eltmake(root, "state", "show", "items")
    if proc.returncode != 0:
        return 0
    return json.loads(proc.stdout)["bookmarks"]["items"]["id"]


def kill9_singer(base: Path, rng: random.Random) -> str:
    root = base / "singer"
    n = 2000
    singer_project(root, n)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "build", "--plain"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(0.3, 2.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    if (root / "warehouse.duckdb").exists():
        try:
            ids = warehouse_ids(root)
        except Exception as e:  # the loader was killed mid-transaction: DuckDB must recover
            return f"warehouse unreadable after the kill: {e}"
        mark = bookmark(root)
        if ids and mark > max(ids):
            return f"bookmark {mark} is past the warehouse ({max(ids)})"
    again = eltmake(root, "build", "--plain")
    if again.returncode != 0:
        return f"the next build failed: {again.stdout[-300:]} {again.stderr[-300:]}"
    ids = warehouse_ids(root)
    if ids != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(ids))[:5]
        return f"{len(ids)} rows for {n} records (missing {missing}, duplicates {len(ids) - len(set(ids))})"
    return ""


def kill9_command(base: Path, rng: random.Random) -> str:
    root = base / "command"
    root.mkdir(parents=True)
    (root / "eltmake.toml").write_text(COMMAND)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "build", "--plain"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(0.2, 1.2))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    again = eltmake(root, "build", "--plain")
    if again.returncode != 0:
        return f"the next build failed: {again.stderr[-300:]}"
    time.sleep(0.3)  # an orphan that survived would keep appending
    lines = (root / "out.txt").read_text().split()
    if lines != [str(i) for i in range(1, 41)] + ["done"]:
        return f"out.txt holds {len(lines)} lines, not one clean run of 41"
    return ""


def damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x00not what eltmake wrote\n" * 40)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "folder":
        path.unlink()
        path.mkdir()


def damaged_file(base: Path, rel: str, how: str) -> str:
    root = base / "damaged"
    root.mkdir(parents=True)
    (root / "eltmake.toml").write_text(
        "[targets.a]\nrun = 'echo a > a.txt'\noutputs = ['a.txt']\n" + "#" * 33000 + "\n"
    )
    if eltmake(root, "build").returncode or eltmake(root, "state", "set", "s", "{}").returncode:
        return "setup failed"
    for extra in ("state.db-wal", "state.db-shm"):
        (root / ".eltmake" / extra).unlink(missing_ok=True)
    damage(root / ".eltmake" / rel, how)
    proc = eltmake(root, "build", "--plain")
    if rel == "state.db":
        return clean_failure(proc, 2) or (
            "" if "state.db" in proc.stderr else f"the message names no file: {proc.stderr}"
        )
    return clean_failure(proc, 0)


def hostile_stream(base: Path, mode: str) -> str:
    root = base / "stream"
    singer_project(root, 120)
    first = eltmake(root, "build", "--plain")
    if first.returncode:
        return f"setup failed: {first.stderr[-200:]}"
    (root / "mode.txt").write_text(mode)
    (root / "n.txt").write_text("300")
    before = bookmark(root)
    proc = eltmake(root, "build", "--plain", "--force", "items")
    problem = clean_failure(proc, 1)
    if problem:
        return problem
    if "tap-script" not in proc.stdout and "duckdb (target)" not in proc.stdout:
        return f"the error names no tool: {proc.stdout[-300:]}"
    if bookmark(root) != before:
        return f"the bookmark moved from {before} to {bookmark(root)}"
    return ""


def hostile_project(base: Path, text: str) -> str:
    root = base / "hostile"
    root.mkdir(parents=True)
    (root / "eltmake.toml").write_bytes(text.encode("utf-8", "surrogateescape"))
    if text == "[targets.a]\nrun = '\xff'\n":
        (root / "eltmake.toml").write_bytes(b"[targets.a]\nrun = '\xff'\n")
    proc = eltmake(root, "build")
    problem = clean_failure(proc, 2)
    if not problem and len([ln for ln in proc.stderr.splitlines() if ln.strip()]) != 1:
        problem = f"more than one line: {proc.stderr}"
    return problem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20, help="kill -9 trials per kind")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')}")
    plan: list[tuple[str, str, object]] = []
    plan += [("kill9-command", f"#{i + 1}", kill9_command) for i in range(args.trials)]
    plan += [("kill9-singer", f"#{i + 1}", kill9_singer) for i in range(args.trials)]
    plan += [("damaged-file", f"{f} {d}", (f, d)) for f in FILES for d in DAMAGE]
    plan += [("hostile-stream", m, m) for m in STREAMS]
    plan += [("hostile-project", k, v) for k, v in HOSTILE_PROJECTS.items()]
    results: dict[str, list[tuple[str, str]]] = {}
    for kind, label, what in plan:
        base = Path(tempfile.mkdtemp(prefix="eltmake-faults-"))
        try:
            if kind == "damaged-file":
                problem = damaged_file(base, *what)  # type: ignore[misc]
            elif kind == "hostile-stream":
                problem = hostile_stream(base, what)  # type: ignore[arg-type]
            elif kind == "hostile-project":
                problem = hostile_project(base, what)  # type: ignore[arg-type]
            else:
                problem = what(base, rng)  # type: ignore[operator]
        except Exception as e:  # a harness failure counts as a failed trial, with its reason
            problem = f"{type(e).__name__}: {e}"
        finally:
            shutil.rmtree(base, ignore_errors=True)
        results.setdefault(kind, []).append((label, problem))
        print(f"  {kind:<16} {label:<28} {'held' if not problem else 'FAILED: ' + problem}")
    print()
    print(f"{'kind':<18}{'trials':>7}{'held':>7}{'failed':>8}")
    total = [0, 0, 0]
    for kind, rows in results.items():
        failed = sum(1 for _, p in rows if p)
        print(f"{kind:<18}{len(rows):>7}{len(rows) - failed:>7}{failed:>8}")
        total[0] += len(rows)
        total[1] += len(rows) - failed
        total[2] += failed
    print(f"{'all':<18}{total[0]:>7}{total[1]:>7}{total[2]:>8}")


if __name__ == "__main__":
    main()
