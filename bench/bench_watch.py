"""``eltmake watch``: edit-to-step-start latency.

A command project with one edited target among ``--targets`` unaffected ones: the edited target's
command writes a timestamp as its first action, so the figure runs from the file write to the
step doing something (file event, debounce, the build's decisions, the process start). Median of
``--edits`` edits, each made after the previous cycle ended.

With ``--dbt DIR`` (a project whose dbt target is built and whose tools are installed, such as
examples/shop after one build) it also edits one model there, in a copy, and measures from the
write to eltmake's ``built`` line for the dbt step that holds it (the model rebuilt, its tests
run, its row checksums taken): with the warm dbt of watch mode, with it turned off
(``ELTMAKE_DBT_WARM=0``, a cold dbt per cycle), and beside them ``dbt build --select MODEL+`` run
by hand in the same copy with the same profile (the baseline, as a dbt user works today). The
edit → ``run`` line figure (eltmake's own reaction) is shown too.

Run: python bench/bench_watch.py [--edits 20] [--targets 50]
     [--dbt examples/shop --model transform/models/marts/fct_orders.sql --dbt-edits 10]
Bars: median ≤ 300 ms to the step's first action; ≤ 2 s edit → dbt model built (warm).
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class Watch:
    """``eltmake watch --plain`` in a folder; output lines with the time each was read."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eltmake", "watch", "--plain", *args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.q: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.q.put((time.time(), line.rstrip("\n")))
        self.q.put((time.time(), None))

    def wait_for(self, pattern: str, timeout: float = 300) -> float:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                t, line = self.q.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                sys.exit("eltmake watch exited:\n" + "\n".join(self.log[-40:]))
            self.log.append(line)
            if rx.search(line):
                return t
        sys.exit(f"timed out waiting for {pattern!r}:\n" + "\n".join(self.log[-40:]))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


def stats(name: str, xs: list[float]) -> str:
    xs_ms = sorted(x * 1000 for x in xs)
    p90 = xs_ms[min(len(xs_ms) - 1, int(len(xs_ms) * 0.9))]
    return (
        f"{name:<38} median {statistics.median(xs_ms):6.0f} ms   min {xs_ms[0]:5.0f}   "
        f"p90 {p90:5.0f}   max {xs_ms[-1]:5.0f}   (n={len(xs_ms)})"
    )


def command_project(root: Path, n_other: int) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src" / "edited.txt").write_text("0\n")
    lines = ['[project]\nname = "bench-watch"\ndefault = "all"\n']
    for i in range(n_other):
        (root / "src" / f"o{i}.txt").write_text(f"{i}\n")
        lines.append(f'[targets.o{i}]\nrun = "true"\ninputs = ["src/o{i}.txt"]\n')
    # The first action of the step: a timestamp (date is a few ms; python would add its start-up).
    stamp = "date +%s.%N > stamp.txt" if _gnu_date() else _py_stamp()
    lines.append(f'[targets.edited]\nrun = "{stamp}"\ninputs = ["src/edited.txt"]\n')
    names = [f"o{i}" for i in range(n_other)] + ["edited"]
    lines.append("[targets.all]\ndeps = [" + ", ".join(f'"{n}"' for n in names) + "]\n")
    (root / "eltmake.toml").write_text("\n".join(lines))


def _gnu_date() -> bool:
    out = subprocess.run(["date", "+%N"], capture_output=True, text=True).stdout.strip()
    return out.isdigit()


def _py_stamp() -> str:
    return f'{sys.executable} -c \'import time; open(\\"stamp.txt\\",\\"w\\").write(repr(time.time()))\''


def bench_command(edits: int, n_other: int) -> tuple[list[float], list[float], list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        command_project(tmp, n_other)
        w = Watch(tmp)
        w.wait_for(r"^watch: waiting for changes")
        to_action, to_run_line, to_done = [], [], []
        stamp = tmp / "stamp.txt"
        for i in range(1, edits + 1):
            before = stamp.read_text() if stamp.exists() else ""
            t0 = time.time()
            (tmp / "src" / "edited.txt").write_text(f"{i}\n")
            t_run = w.wait_for(r"^run\s+edited")
            t_done = w.wait_for(r"^watch: waiting for changes")
            text = stamp.read_text()
            if text == before:
                sys.exit("the edited step did not run:\n" + "\n".join(w.log[-20:]))
            to_action.append(float(text) - t0)
            to_run_line.append(t_run - t0)
            to_done.append(t_done - t0)
            time.sleep(0.1)
        w.stop()
        return to_action, to_run_line, to_done
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy(src: Path, tmp: Path) -> Path:
    root = tmp / src.name
    shutil.copytree(
        src, root, ignore=shutil.ignore_patterns(".eltmake", "target", "logs", "*.duckdb*")
    )
    return root


def bench_dbt_watch(
    root: Path, model: str, target: str | None, edits: int, warm: bool
) -> tuple[list, list]:
    """Edit → the dbt step's ``run`` line, and edit → its ``built`` line, in a watch."""
    env = {} if warm else {"ELTMAKE_DBT_WARM": "0"}
    w = Watch(root, *([target] if target else []), env=env)
    w.wait_for(r"^watch: waiting for changes")
    path = root / model
    original = path.read_text()
    to_run, to_built = [], []
    try:
        for i in range(1, edits + 1):
            time.sleep(0.5)  # between saves, as between a developer's
            t0 = time.time()
            path.write_text(original + f"\n-- edit {i} {'warm' if warm else 'cold'}\n")
            t_run = w.wait_for(r"^run\s+")
            t_built = w.wait_for(r"^(built|failed)\s+")
            if not w.log[-1].startswith("built"):
                sys.exit("the dbt step failed:\n" + "\n".join(w.log[-30:]))
            w.wait_for(r"^watch: waiting for changes")
            to_run.append(t_run - t0)
            to_built.append(t_built - t0)
    finally:
        path.write_text(original)
        w.stop()
    return to_run, to_built


def bench_dbt_by_hand(root: Path, model: str, edits: int) -> list[float]:
    """``dbt build --select MODEL+`` after each edit, with the profile eltmake generated."""
    from eltmake_dbt import config

    from eltmake.api import executable_path, load_project

    project = load_project(root)
    names = list(project.tables.get("transformers") or {})
    tf = config.transformer(project, names[0])
    exe = executable_path(project, tf.spec())
    env = config.dbt_env(project, tf, dict(os.environ))
    name = Path(model).stem
    path = root / model
    original = path.read_text()
    out = []
    try:
        for i in range(1, edits + 1):
            path.write_text(original + f"\n-- by hand {i}\n")
            t0 = time.time()
            proc = subprocess.run(
                [exe, "build", "--select", f"{name}+"],
                cwd=tf.project_dir,
                env=env,
                capture_output=True,
                text=True,
            )
            out.append(time.time() - t0)
            if proc.returncode != 0:
                sys.exit("dbt build failed:\n" + proc.stdout[-3000:])
    finally:
        path.write_text(original)
    return out


def bench_dbt(src: Path, model: str, target: str | None, edits: int) -> dict[str, list]:
    """A copy of the project, built once; then the watch warm, cold, and dbt by hand."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-dbt-"))
    try:
        root = _copy(src, tmp)
        subprocess.run(
            [sys.executable, "-m", "eltmake", "build", "--plain", *([target] if target else [])],
            cwd=root,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        results: dict[str, list] = {}
        # Alternated in halves, so a change in the machine's load shows in both.
        half = max(edits // 2, 1)
        for _round in range(2):
            for warm in (True, False):
                run, built = bench_dbt_watch(root, model, target, half, warm)
                kind = "warm" if warm else "cold"
                results.setdefault(f"{kind} run", []).extend(run)
                results.setdefault(f"{kind} built", []).extend(built)
            results.setdefault("by hand", []).extend(bench_dbt_by_hand(root, model, half))
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument(
        "--targets", type=int, default=50, help="unaffected targets beside the edited one"
    )
    ap.add_argument("--dbt", type=Path, help="a built project with a dbt step (e.g. examples/shop)")
    ap.add_argument("--model", help="the model file to edit, relative to the --dbt project")
    ap.add_argument(
        "--target", help="the target to watch in the --dbt project (default: its default)"
    )
    ap.add_argument("--dbt-edits", type=int, default=10, help="edits of the dbt model, each way")
    args = ap.parse_args()

    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.edits} edits each")
    action, run_line, done = bench_command(args.edits, args.targets)
    print(f"command project: 1 edited target + {args.targets} unaffected")
    print("  " + stats("edit → step's first action", action))
    print("  " + stats("edit → `run` line", run_line))
    print("  " + stats("edit → cycle done", done))
    verdict = "meets" if statistics.median(action) <= 0.3 else "MISSES"
    print(f"  bar ≤ 300 ms median (edit → step's first action): {verdict}")
    if args.dbt:
        if not args.model:
            sys.exit("--dbt needs --model PATH (the model file to edit)")
        r = bench_dbt(args.dbt.resolve(), args.model, args.target, args.dbt_edits)
        print(f"dbt project {args.dbt}: editing {args.model}")
        print("  " + stats("watch, warm dbt: edit → `run` line", r["warm run"]))
        print("  " + stats("watch, warm dbt: edit → `built` line", r["warm built"]))
        print("  " + stats("watch, cold dbt: edit → `built` line", r["cold built"]))
        print("  " + stats(f"dbt build --select {Path(args.model).stem}+ by hand", r["by hand"]))
        warm = statistics.median(r["warm built"])
        ratio = statistics.median(r["by hand"]) / warm
        verdict = "meets" if warm <= 2.0 else "MISSES"
        print(f"  warm rebuild {ratio:.1f}x faster than dbt by hand; bar ≤ 2 s median: {verdict}")


if __name__ == "__main__":
    main()
