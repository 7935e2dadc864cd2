"""Singer extract-load through eltmake vs the raw ``tap | target`` shell pipe (and ``meltano run``).

For each size (default 1,000 and 1,000,000 records of ~200 bytes), in the same run and on the
same data, with the same installed tools and the same catalog:

* raw:     ``tap-jsonl --config … --catalog … | TARGET --config …`` in bash with pipefail;
* eltmake: ``eltmake build -B`` of one extract target, its state cleared first (untimed) so that
  no state is passed, like the raw pipe, with eltmake's own peak RSS (its process only:
  VmHWM from /proc/self/status, written by a wrapper at exit; the tap and target are not counted).
  eltmake's own modules are byte-compiled first (``compileall``), as a wheel install does and as
  the tools' environments are: under PYTHONDONTWRITEBYTECODE an editable checkout would otherwise
  recompile eltmake on every start;
* meltano (``--meltano``): ``meltano run --full-refresh tap-jsonl TARGET``, Meltano installed by
  this script into its own virtual environment.

Each run loads a fresh destination and is checked: the loaded row count must equal the source's
(nothing lost or duplicated). Prints medians, ratios, and whether PYTHONDONTWRITEBYTECODE is set
(without byte-code caches every Python start recompiles its imports; compare like with like).

Run: python bench/bench_singer.py [--sizes 1000,1000000] [--target duckdb|jsonl] [--meltano]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
TAP_PIP = "tap-jsonl==0.3.1"
TARGET_JSONL_PIP = "target-jsonl==0.1.4"
MELTANO_PIP = "meltano==4.4.1"

WRAPPER = """
import resource, sys
from eltmake.cli import main
code = main(sys.argv[1:])
ru = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries the pre-exec high-water mark (the parent's, copied at fork)
# into ru_maxrss, so a big parent (this bench, after a DuckDB query) would inflate it.
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
with open(sys.argv[0] + ".rss", "w") as f:
    f.write(f"{hwm} {ru.ru_utime + ru.ru_stime}")
sys.exit(code)
"""


def write_data(path: Path, n: int) -> None:
    """n records of ~200 bytes each."""
    with open(path, "wb") as f:
        for i in range(n):
            f.write(
                orjson.dumps(
                    {
                        "id": i,
                        "customer": f"customer-{i % 997}",
                        "email": f"user{i}@example.com",
                        "amount": round(i * 1.37, 2),
                        "status": "shipped",
                        "created_at": "2026-01-01T00:00:00Z",
                        "note": "x" * 40,
                    }
                )
                + b"\n"
            )


def sh(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"failed: {cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


class Bench:
    def __init__(self, work: Path, target: str, tools_dir: Path):
        self.work = work
        self.target = target
        self.proj = work / "project"
        self.proj.mkdir(parents=True, exist_ok=True)
        (self.proj / "data").mkdir(exist_ok=True)
        self.data = self.proj / "data" / "orders.jsonl"
        self.env = {**os.environ, "ELTMAKE_TOOLS_DIR": str(tools_dir)}
        self.wrapper = work / "eltmake_wrapper.py"
        self.wrapper.write_text(WRAPPER)
        self.cpu: list[float] = []  # eltmake's own CPU seconds per run (not its children's)
        if target == "duckdb":
            loader = (
                '[loaders.duckdb]\nexecutable = "eltmake-target-duckdb"\n'
                'config = { path = "warehouse.duckdb", default_target_schema = "raw" }\n'
            )
        else:
            loader = (
                f'[loaders.target-jsonl]\npip_url = "{TARGET_JSONL_PIP}"\n'
                'config = { destination_path = "out", do_timestamp_file = false }\n'
            )
        self.loader = "duckdb" if target == "duckdb" else "target-jsonl"
        (self.proj / "eltmake.toml").write_text(
            '[project]\nname = "bench"\ndefault = "raw"\n\n'
            f'[extractors.tap-jsonl]\npip_url = "{TAP_PIP}"\n'
            'config = { path = "data/orders.jsonl", stream_name = "orders", primary_keys = ["id"] }\n\n'
            f"{loader}\n"
            f'[targets.raw]\nextract = "tap-jsonl"\nload = "{self.loader}"\n'
        )

    def eltmake(self, *args: str) -> subprocess.CompletedProcess:
        return sh([sys.executable, "-m", "eltmake", *args, "-C", str(self.proj)], env=self.env)

    def setup(self) -> None:
        write_data(self.data, 1000)
        self.eltmake("install")
        self.eltmake("build", "--plain")  # warms the about/catalog caches (not timed)
        sys.path.insert(0, str(ROOT / "plugins"))
        sys.path.insert(0, str(ROOT))
        from eltmake.project import load_project
        from eltmake.step import ToolSpec
        from eltmake.toolenv import executable_path

        project = load_project(self.proj, environ=self.env)
        self.tap_exe = executable_path(project, ToolSpec("tap-jsonl", TAP_PIP, "tap-jsonl"))
        if self.target == "duckdb":
            spec = ToolSpec("duckdb", None, "eltmake-target-duckdb")
        else:
            spec = ToolSpec("target-jsonl", TARGET_JSONL_PIP, "target-jsonl")
        self.target_exe = executable_path(project, spec)
        from eltmake_singer.catalog import apply_selection

        (self.work / "tap.json").write_text(
            json.dumps({"path": str(self.data), "stream_name": "orders", "primary_keys": ["id"]})
        )
        if self.target == "duckdb":
            cfg = {"path": str(self.proj / "warehouse.duckdb"), "default_target_schema": "raw"}
        else:
            cfg = {"destination_path": str(self.proj / "out"), "do_timestamp_file": False}
        (self.work / "target.json").write_text(json.dumps(cfg))
        cat = sh([self.tap_exe, "--config", str(self.work / "tap.json"), "--discover"])
        selected = apply_selection(json.loads(cat.stdout), None)
        (self.work / "catalog.json").write_text(json.dumps(selected))

    def reset(self) -> None:
        for p in ("warehouse.duckdb", "warehouse.duckdb.wal"):
            (self.proj / p).unlink(missing_ok=True)
        shutil.rmtree(self.proj / "out", ignore_errors=True)
        (self.proj / "out").mkdir()

    def loaded(self) -> int:
        if self.target == "duckdb":
            import duckdb

            with duckdb.connect(str(self.proj / "warehouse.duckdb"), read_only=True) as db:
                n, distinct = db.execute(
                    "select count(*), count(distinct id) from raw.orders"
                ).fetchone()
            return n if n == distinct else -1
        with open(self.proj / "out" / "orders.jsonl", "rb") as f:
            return sum(1 for _ in f)

    def run_raw(self) -> float:
        self.reset()
        w = self.work
        cmd = (
            f"set -o pipefail; {self.tap_exe} --config {w}/tap.json --catalog {w}/catalog.json "
            f"2>/dev/null | {self.target_exe} --config {w}/target.json > /dev/null 2>&1"
        )
        t0 = time.perf_counter()
        sh(["bash", "-c", cmd], cwd=self.proj, env=self.env)
        return time.perf_counter() - t0

    def run_eltmake(self) -> tuple[float, float]:
        self.reset()
        rss_file = Path(str(self.wrapper) + ".rss")
        rss_file.unlink(missing_ok=True)
        # Like the raw pipe: no state passed (cleared, untimed), the cached catalog.
        self.eltmake("state", "clear", "raw")
        argv = [sys.executable, str(self.wrapper), "build", "-B", "--plain"]
        t0 = time.perf_counter()
        sh([*argv, "-C", str(self.proj)], env=self.env)
        wall = time.perf_counter() - t0
        rss_kb, cpu = rss_file.read_text().split()
        self.cpu.append(float(cpu))
        return wall, int(rss_kb) / 1024.0

    # --- meltano ---------------------------------------------------------------------------------

    def setup_meltano(self) -> None:
        venv = self.work / "meltano-venv"
        mel = venv / "bin" / "meltano"
        if not mel.exists():
            print(f"installing {MELTANO_PIP} into {venv} ...", flush=True)
            import uv

            sh([uv.find_uv_bin(), "venv", "-q", "--python", sys.executable, str(venv)])
            sh(
                [
                    uv.find_uv_bin(),
                    "pip",
                    "install",
                    "-q",
                    "--compile-bytecode",
                    "--python",
                    str(venv / "bin" / "python"),
                    MELTANO_PIP,
                ]
            )
        self.meltano = str(mel)
        self.mproj = self.work / "meltano-project"
        self.mproj.mkdir(exist_ok=True)
        if self.target == "duckdb":
            loader = {
                "name": "eltmake-target-duckdb",
                "namespace": "eltmake_target_duckdb",
                "pip_url": str(ROOT),
                "executable": "eltmake-target-duckdb",
                "config": {
                    "path": str(self.proj / "warehouse.duckdb"),
                    "default_target_schema": "raw",
                },
            }
        else:
            loader = {
                "name": "target-jsonl",
                "namespace": "target_jsonl",
                "pip_url": TARGET_JSONL_PIP,
                "executable": "target-jsonl",
                "config": {"destination_path": str(self.proj / "out"), "do_timestamp_file": False},
            }
        self.mloader = loader["name"]
        spec = {
            "version": 1,
            "project_id": "eltmake-bench",
            "send_anonymous_usage_stats": False,
            "default_environment": "dev",
            "environments": [{"name": "dev"}],
            "plugins": {
                "extractors": [
                    {
                        "name": "tap-jsonl",
                        "namespace": "tap_jsonl",
                        "pip_url": TAP_PIP,
                        "executable": "tap-jsonl",
                        "capabilities": ["catalog", "discover", "state"],
                        "config": {
                            "path": str(self.data),
                            "stream_name": "orders",
                            "primary_keys": ["id"],
                        },
                    }
                ],
                "loaders": [loader],
            },
        }
        (self.mproj / "meltano.yml").write_text(json.dumps(spec, indent=1))  # JSON is YAML
        self.menv = {
            **self.env,
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_DISABLE_TRACKING": "true",
        }
        plugins = self.mproj / ".meltano"
        if not all(
            (plugins / kind / name).exists()
            for kind, name in (("extractors", "tap-jsonl"), ("loaders", self.mloader))
        ):
            print("meltano install (its own plugin environments) ...", flush=True)
            sh([self.meltano, "install"], cwd=self.mproj, env=self.menv)

    def run_meltano(self) -> float:
        self.reset()
        t0 = time.perf_counter()
        sh(
            [self.meltano, "run", "--full-refresh", "tap-jsonl", self.mloader],
            cwd=self.mproj,
            env=self.menv,
        )
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,1000000")
    ap.add_argument("--target", choices=["duckdb", "jsonl"], default="duckdb")
    ap.add_argument("--meltano", action="store_true", help="also time `meltano run`")
    ap.add_argument(
        "--repeat", type=int, default=0, help="runs per size (default 5 small, 1 large)"
    )
    ap.add_argument("--workdir", help="keep installs and data here (default: a temp folder)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="eltmake-bench-singer-")).resolve()
    tools = Path(
        os.environ.get("ELTMAKE_TOOLS_DIR") or Path(tempfile.gettempdir()) / "eltmake-bench-tools"
    )
    bench = Bench(work, args.target, tools)
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}")
    print(
        f"target: {args.target}; tools: {tools}; work: {work}; cpus: {os.cpu_count()}", flush=True
    )
    compiled = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "eltmake"), str(ROOT / "plugins")],
        capture_output=True,
    )
    print(f"eltmake byte-compiled: {'yes' if compiled.returncode == 0 else 'no'}", flush=True)
    bench.setup()
    if args.meltano:
        bench.setup_meltano()

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        write_data(bench.data, n)
        repeat = args.repeat or (5 if n <= 10000 else 1)
        raw, elt, mel, rss = [], [], [], []
        bench.cpu = []
        for _ in range(repeat):
            raw.append(bench.run_raw())
            assert bench.loaded() == n, f"raw pipe loaded {bench.loaded()} of {n}"
            wall, mb = bench.run_eltmake()
            got = bench.loaded()
            if got != n:
                sys.exit(f"eltmake loaded {got} of {n} records")
            elt.append(wall)
            rss.append(mb)
            if args.meltano:
                mel.append(bench.run_meltano())
                assert bench.loaded() == n, f"meltano loaded {bench.loaded()} of {n}"
        r, e = statistics.median(raw), statistics.median(elt)
        line = (
            f"{n:>9,} records: raw pipe {r:7.2f}s  eltmake {e:7.2f}s  "
            f"ratio {e / r:5.3f} ({e - r:+.2f}s)  eltmake peak RSS {max(rss):5.1f} MB, "
            f"own CPU {statistics.median(bench.cpu):.2f}s"
        )
        if mel:
            m = statistics.median(mel)
            line += f"  meltano {m:7.2f}s  eltmake/meltano {e / m:5.3f}"
        print(line + f"  [{repeat} run(s), all {n:,} records loaded each time]", flush=True)
        rows.append((n, r, e, max(rss), statistics.median(mel) if mel else None))
    if len(rows) > 1:
        print(
            f"eltmake peak RSS: {rows[0][3]:.1f} MB at {rows[0][0]:,} → {rows[-1][3]:.1f} MB at {rows[-1][0]:,}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
