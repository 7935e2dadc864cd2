"""Start-up: `eltmake --version` and `eltmake --help` against a bare `python -c pass`.

Run with the Python of the environment eltmake is installed in:  python bench/bench_startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 20


def timed(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    exe = str(Path(sys.executable).parent / "eltmake")
    print(
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}  "
        f"python={sys.version.split()[0]}  median of {RUNS} runs"
    )
    base = timed([sys.executable, "-c", "pass"])
    print(f"{'python -c pass':<22} {base * 1000:7.1f} ms   1.00x")
    for args in (["--version"], ["--help"]):
        t = timed([exe, *args])
        print(f"{'eltmake ' + args[0]:<22} {t * 1000:7.1f} ms   {t / base:.2f}x")


if __name__ == "__main__":
    main()
