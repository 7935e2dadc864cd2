"""No-op builds: 10 / 1,000 / 10,000 command targets in a layered graph.

For each size: the first build, a no-op build (nothing changed; the figure that matters in CI) and
a build after one input changed. Prints wall times and the ratio of each no-op to the 10-target
no-op. Run: python bench/bench_noop.py [--sizes 10,1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH = 50  # targets per layer


def make_project(root: Path, n: int) -> None:
    (root / "src").mkdir(parents=True)
    lines = ['[project]\nname = "bench"\ndefault = "all"\n']
    names = []
    for i in range(n):
        name = f"t{i}"
        (root / "src" / f"{name}.txt").write_text(f"input {i}\n")
        layer = i // WIDTH
        deps = []
        if layer > 0:
            base = (layer - 1) * WIDTH
            deps = [f"t{base + (i % WIDTH)}", f"t{base + ((i + 7) % WIDTH)}"]
        lines.append(
            f'[targets.{name}]\nrun = "true"\ninputs = ["src/{name}.txt"]\n'
            + (f"deps = {deps!r}\n".replace("'", '"') if deps else "")
        )
        names.append(name)
    lines.append(f"[targets.all]\ndeps = {names!r}\n".replace("'", '"'))
    (root / "eltmake.toml").write_text("\n".join(lines))


def build(root: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "eltmake", "build", "--plain", "-C", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed in {root}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--store",
        metavar="URL",
        help="instead: no-op builds of --project against this store vs the local one",
    )
    ap.add_argument("--project", default="examples/shop", help="with --store (default %(default)s)")
    args = ap.parse_args()
    if args.store:
        return compare_stores(Path(args.project), args.store, max(args.repeat, 7))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}  "
        f"cores={os.cpu_count()}  python={sys.version.split()[0]}"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = min(_time([sys.executable, "-c", "pass"]) for _ in range(5))
    print(f"baseline: python -c pass {bare * 1000:.0f} ms")
    del t0
    base_noop = None
    print(
        f"{'targets':>8} {'first':>9} {'no-op':>9} {'1 changed':>10} {'no-op / 10-target no-op':>25}"
    )
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix=f"eltmake-bench-{n}-"))
        try:
            make_project(tmp, n)
            # As in a real project, the files are older than eltmake's 2 s "racy" window (a file
            # modified that recently is hashed again next time, whatever its stat says).
            time.sleep(2.1)
            first = build(tmp)
            noop = statistics.median(build(tmp) for _ in range(args.repeat))
            changed = []
            for r in range(args.repeat):
                (tmp / "src" / "t0.txt").write_text(f"changed {r}\n")
                changed.append(build(tmp))
            if base_noop is None:
                base_noop = noop
            print(
                f"{n:>8} {first:>8.2f}s {noop:>8.3f}s {statistics.median(changed):>9.3f}s "
                f"{noop / base_noop:>24.2f}x"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def compare_stores(project: Path, url: str, repeat: int) -> None:
    """A no-op build of a copy of ``project`` with the local store and another copy with the
    store at ``url``, alternated ``repeat`` times; medians and their difference."""
    print(
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}  "
        f"cores={os.cpu_count()}  project={project}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="eltmake-bench-store-"))
    try:
        ignore = shutil.ignore_patterns(".eltmake", "*.duckdb", "*.duckdb.wal", "target", "out")
        local, shared = tmp / "local", tmp / "shared"
        shutil.copytree(project, local, ignore=ignore)
        shutil.copytree(project, shared, ignore=ignore)
        env = {"ELTMAKE_STORE": url}
        build(local)
        build(shared, env)
        times: dict[str, list[float]] = {"local": [], "store": []}
        for _ in range(repeat):
            times["local"].append(build(local))
            times["store"].append(build(shared, env))
        a, b = (statistics.median(times[k]) for k in ("local", "store"))
        print(f"no-op, local store      median {a:.3f}s  (n={repeat})")
        print(f"no-op, {url.split('://')[0]} store  median {b:.3f}s  ({b - a:+.3f}s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _time(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
