"""The Dask executor against the local one, on this machine.

1. Throughput: 50 steps of 0.5 s (``sleep 0.5``) on a Dask cluster of 2 workers (a ``dask
   scheduler`` and two ``dask worker`` processes) against the local executor with the same
   parallelism (``-j`` = 2 workers × threads), and on ``--executor dask`` (a LocalCluster that
   eltmake starts, its start-up included).
2. Per-step overhead: steps of ``true`` one at a time (``-j 1``, one worker of one thread), in
   builds of N/5 and N steps: the slope is the cost per step, the rest the cost per build
   (importing Dask, connecting); Dask minus local for each (target: at most 50 ms per step).

Every build is ``eltmake build -B`` as a subprocess, so eltmake's own start-up is in both figures
and cancels out of the differences. Run: python bench/bench_dask.py [--threads 1] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_project(root: Path, n: int, argv: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    run = json.dumps(argv)
    (root / "eltmake.toml").write_text("".join(f"[targets.s{i}]\nrun = {run}\n" for i in range(n)))


def build(root: Path, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "eltmake", "build", "-B", "--plain", "-C", str(root), *args],
        capture_output=True,
        text=True,
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed in {root}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dt


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on loopback ports."""

    def __init__(self, folder: Path, workers: int, threads: int):
        self.procs: list[subprocess.Popen] = []
        file = folder / "scheduler.json"
        file.unlink(missing_ok=True)
        self._start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(file)]
        )
        while not (file.exists() and file.read_text().strip().endswith("}")):
            time.sleep(0.05)
        self.address = json.loads(file.read_text())["address"]
        for _ in range(workers):
            self._start(["worker", self.address, "--nthreads", str(threads), "--host", "127.0.0.1"])
        from distributed import Client

        with Client(self.address, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)

    def _start(self, args: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", *args, "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="threads per worker (of 2)")
    ap.add_argument("--steps", type=int, default=100, help="steps for the overhead figure")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parts", default="throughput,overhead")
    args = ap.parse_args()
    import distributed

    print(
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}  "
        f"cores={os.cpu_count()}  python={sys.version.split()[0]}  "
        f"distributed={distributed.__version__}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="eltmake-bench-dask-"))
    try:
        if "throughput" in args.parts:
            throughput(tmp, args.threads, args.repeat)
        if "overhead" in args.parts:
            overhead(tmp, args.steps, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def throughput(tmp: Path, threads: int, repeat: int) -> None:
    """50 steps of 0.5 s: a running 2-worker cluster, --executor dask, and the local executor."""
    jobs = 2 * threads
    make_project(tmp / "sleepy", 50, ["sleep", "0.5"])
    cluster = Cluster(tmp, workers=2, threads=threads)
    try:
        build(tmp / "sleepy", "--executor", cluster.address)  # warm the workers once
        dask_t = min(
            build(tmp / "sleepy", "-j", str(jobs), "--executor", cluster.address)
            for _ in range(repeat)
        )
    finally:
        cluster.close()
    local_t = min(
        build(tmp / "sleepy", "-j", str(jobs), "--executor", "local") for _ in range(repeat)
    )
    own_t = min(build(tmp / "sleepy", "-j", str(jobs), "--executor", "dask") for _ in range(repeat))
    ideal = -(-50 // jobs) * 0.5
    print(f"\n50 steps of 0.5 s, {jobs} at a time (ideal {ideal:.1f} s; best of {repeat}):")
    print(f"  local executor, -j {jobs}                           {local_t:6.2f} s")
    print(
        f"  running Dask cluster, 2 workers × {threads} thread(s)    {dask_t:6.2f} s  "
        f"({dask_t / local_t:.2f}x local)"
    )
    print(
        f"  --executor dask (LocalCluster, its start included) {own_t:6.2f} s  "
        f"({own_t / local_t:.2f}x local)"
    )


def overhead(tmp: Path, n: int, repeat: int) -> None:
    """Steps of `true`, one at a time, in builds of two sizes: the slope is what each step costs,
    the rest is what a build costs once (importing Dask, connecting). Dask minus local, each."""
    small, big = max(1, n // 5), n
    for size in (small, big):
        make_project(tmp / f"tiny{size}", size, ["true"])

    def timed(size: int, *args: str) -> float:
        return statistics.median(
            build(tmp / f"tiny{size}", "-j", "1", *args) for _ in range(repeat)
        )

    cluster = Cluster(tmp, workers=1, threads=1)
    try:
        build(tmp / f"tiny{small}", "--executor", cluster.address)  # warm the worker
        dask = {size: timed(size, "--executor", cluster.address) for size in (small, big)}
    finally:
        cluster.close()
    local = {size: timed(size, "--executor", "local") for size in (small, big)}

    def split(t: dict[int, float]) -> tuple[float, float]:
        per_step = (t[big] - t[small]) / (big - small)
        return per_step, t[small] - small * per_step

    (dl, df), (ll, lf) = split(dask), split(local)
    print(f"\nsteps of `true`, one at a time; builds of {small} and {big} (medians of {repeat}):")
    print(f"  local executor   {ll * 1000:5.1f} ms per step, {lf:5.2f} s per build")
    print(f"  Dask, 1 worker   {dl * 1000:5.1f} ms per step, {df:5.2f} s per build")
    print(
        f"  Dask overhead: {(dl - ll) * 1000:.1f} ms per step (target: at most 50 ms), "
        f"{df - lf:.2f} s per build (importing Dask, connecting, disconnecting)"
    )


if __name__ == "__main__":
    main()
