"""examples/shop: eltmake beside the same work done by hand, printed side by side.

Three situations, each timed as wall clock around the whole command (process start included):

* first build: from an empty warehouse (tools already installed: installing is not timed);
* no-op build: nothing changed (the figure that matters in CI: eltmake runs no tool);
* one-model edit: ``dim_customers.sql`` changed; eltmake re-runs the marts target and the report.

"By hand" is what a person runs without a build tool: ``tap-spreadsheets | eltmake-target-duckdb``,
``dbt build`` and ``python scripts/report.py`` (on a no-op or an edit they might skip the load, so
that column shows ``dbt build`` + report there; nothing tells them that nothing changed).

``--env postgres`` does the same into PostgreSQL: ``eltmake build --env postgres`` beside
``tap-spreadsheets | target-postgres`` and ``dbt build`` with dbt-postgres. The server is the one
the PG* variables name (PGHOST set), else a throwaway one started for the run (tests/pgserver.py);
every build from empty gets a fresh database.

Run: python bench/bench_example.py [--repeat 3] [--env postgres]. Tools are installed once into
``$ELTMAKE_TOOLS_DIR`` (default: .bench/tools). The PYTHONDONTWRITEBYTECODE setting is printed:
without byte-code caches every Python start recompiles its imports, so compare like with like.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "shop"
EDIT = "transform/models/marts/dim_customers.sql"


def run(argv: list[str], cwd: Path, env: dict[str, str], stdin=None, stdout=None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout or subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace")[-2000:] if proc.stdout else ""
        sys.exit(f"{' '.join(argv)} failed in {cwd}:\n{out}\n{proc.stderr.decode()[-2000:]}")
    return dt


def fresh_copy(tmp: Path, name: str) -> Path:
    root = tmp / name
    shutil.copytree(
        EXAMPLE,
        root,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    return root


def eltmake(root: Path, env: dict[str, str], *args: str, env_name: str | None = None) -> float:
    plain = ["--plain"] if args[0] == "build" else []
    extra = ["--env", env_name] if env_name else []
    argv = [sys.executable, "-m", "eltmake", *args, *plain, *extra, "-C", str(root)]
    return run(argv, root, env)


def tool(env: dict[str, str], name: str, executable: str, pip_has: str) -> Path:
    """The installed tool whose pip_url mentions ``pip_has`` (there may be several dbt)."""
    for folder in sorted(Path(env["ELTMAKE_TOOLS_DIR"]).glob(f"{name}-*")):
        marker = folder / "eltmake-tool.json"
        if marker.is_file() and pip_has in json.loads(marker.read_text()).get("pip_url", ""):
            return folder / "bin" / executable
    sys.exit(f"no installed {name} with {pip_has} in {env['ELTMAKE_TOOLS_DIR']}")


def toggle_edit(root: Path) -> None:
    path = root / EDIT
    text = path.read_text()
    if "lower(c.country)" in text:
        text = text.replace("lower(c.country) as country", "c.country")
    else:
        text = text.replace("    c.country,", "    lower(c.country) as country,")
    path.write_text(text)


class ByHand:
    """The shell pipe and dbt, with the same tools and profile eltmake uses."""

    def __init__(self, root: Path, env: dict[str, str], postgres: bool = False):
        self.root = root
        self.env = {**env, "SHOP_WAREHOUSE": "postgres"} if postgres else env
        self.tap = tool(env, "tap-spreadsheets", "tap-spreadsheets", "tap-spreadsheets")
        adapter = "dbt-postgres" if postgres else "dbt-duckdb"
        self.dbt = tool(env, "dbt", "dbt", adapter)
        conf = root / "hand"
        conf.mkdir(exist_ok=True)
        files = [
            {"path": f"data/{n}.csv", "format": "csv", "table_name": n, "primary_keys": ["id"]}
            for n in ("customers", "orders", "payments")
        ]
        (conf / "tap.json").write_text(json.dumps({"files": files}))
        if postgres:
            self.target = tool(env, "postgres", "target-postgres", "target-postgres")
            url = (
                f"postgresql+psycopg://{env['PGUSER']}@{env['PGHOST']}:{env['PGPORT']}/"
                f"{env['PGDATABASE']}"
            )
            target = {"sqlalchemy_url": url, "default_target_schema": "raw"}
        else:
            self.target = Path(sys.executable).parent / "eltmake-target-duckdb"
            target = {"path": "warehouse.duckdb", "default_target_schema": "raw"}
        (conf / "target.json").write_text(json.dumps(target))
        # The profile eltmake generates, copied (its target renamed), so that dbt does the same
        # work.
        text = (root / ".eltmake/dbt/dbt/profiles.yml").read_text()
        profile = json.loads(text.split("\n", 1)[1])
        for entry in profile.values():
            entry["outputs"] = {"hand": entry["outputs"].pop(entry["target"])}
            entry["target"] = "hand"
        (conf / "profiles.yml").write_text(json.dumps(profile, indent=2))
        self.dbt_env = {
            **env,
            "DBT_PROFILES_DIR": str(conf),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
        }

    def load(self) -> float:
        pipe = f"'{self.tap}' --config hand/tap.json | '{self.target}' --config hand/target.json"
        return run(["bash", "-o", "pipefail", "-c", pipe], self.root, self.env)

    def transform_and_report(self) -> float:
        t = run([str(self.dbt), "build"], self.root / "transform", self.dbt_env)
        return t + run([sys.executable, "scripts/report.py"], self.root, self.env)


class Postgres:
    """Where the postgres runs go: the server the PG* variables name, or a throwaway one."""

    def __init__(self, stack: contextlib.ExitStack):
        sys.path.insert(0, str(REPO / "tests"))
        import pgserver

        self.pg = pgserver
        if os.environ.get("PGHOST"):
            self.server = pgserver.PgServer(
                host=os.environ["PGHOST"],
                port=int(os.environ.get("PGPORT", "5432")),
                user=os.environ.get("PGUSER", "postgres"),
                password=os.environ.get("PGPASSWORD", ""),
                dbname=os.environ.get("PGDATABASE", "postgres"),
            )
        else:
            print("starting a throwaway PostgreSQL server ...", flush=True)
            self.server = stack.enter_context(pgserver.running_server())
        self.made: list[str] = []

    def fresh(self, tag: str) -> dict[str, str]:
        """The PG* variables of a new, empty database (dropped at the end)."""
        name = f"bench_{tag}_{os.getpid()}"
        self.pg.drop_database(self.server, name)
        self.pg.create_database(self.server, name)
        self.made.append(name)
        return self.server.env(name)

    def close(self) -> None:
        for name in self.made:
            self.pg.drop_database(self.server, name)


def median(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--env", choices=["postgres"], help="the example's postgres environment")
    args = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("ELTMAKE_TOOLS_DIR", str(REPO / ".bench" / "tools"))
    env["PYTHONUNBUFFERED"] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="bench-example-"))
    stack = contextlib.ExitStack()
    pg = Postgres(stack) if args.env else None
    try:
        if pg is not None:
            env.update(pg.fresh("setup"))
        setup = fresh_copy(tmp, "setup")
        print("installing tools (not timed) ...", flush=True)
        eltmake(setup, env, "install", env_name=args.env)
        first, noop, edit = [], [], []
        hand_first, hand_noop, hand_edit = [], [], []
        for i in range(args.repeat):
            if pg is not None:
                env.update(pg.fresh(f"e{i}"))
            root = fresh_copy(tmp, f"e{i}")
            first.append(eltmake(root, env, "build", "warehouse", env_name=args.env))
            for _ in range(3):
                noop.append(eltmake(root, env, "build", "warehouse", env_name=args.env))
            toggle_edit(root)
            edit.append(eltmake(root, env, "build", "warehouse", env_name=args.env))

            if pg is not None:
                env.update(pg.fresh(f"h{i}"))
            hand_root = fresh_copy(tmp, f"h{i}")
            # Lets dbt parse once, which writes the profile dbt uses (untimed).
            eltmake(hand_root, env, "install", env_name=args.env)
            hand = ByHand(hand_root, env, postgres=pg is not None)
            hand_first.append(hand.load() + hand.transform_and_report())
            hand_noop.append(hand.transform_and_report())
            toggle_edit(hand_root)
            hand_edit.append(hand.transform_and_report())
            print(
                f"  run {i + 1}: eltmake first {first[-1]:.2f} s, no-op {noop[-1]:.2f} s, "
                f"edit {edit[-1]:.2f} s | by hand {hand_first[-1]:.2f} / {hand_noop[-1]:.2f} / "
                f"{hand_edit[-1]:.2f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pg is not None:
            pg.close()
        stack.close()
    setting = os.environ.get("PYTHONDONTWRITEBYTECODE") or "unset"
    print()
    where = " --env postgres (PostgreSQL)" if args.env else " (DuckDB)"
    print(f"examples/shop{where}, medians of {args.repeat} runs ({len(noop)} no-ops); ", end="")
    print(f"PYTHONDONTWRITEBYTECODE={setting}; {os.cpu_count()} cores")
    print(f"{'':22}{'eltmake':>10}{'by hand':>12}{'ratio':>8}")
    rows = [
        ("first build", first, hand_first),
        ("no-op build", noop, hand_noop),
        ("one-model edit", edit, hand_edit),
    ]
    for label, ours, theirs in rows:
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"{label:22}{median(ours):>10}{median(theirs):>12}{ratio:>7.2f}x")
    target = "target-postgres" if args.env else "eltmake-target-duckdb"
    print(f"by hand: tap | {target}, dbt build, report (no-op and edit: dbt build and report only)")


if __name__ == "__main__":
    main()
