"""Running a dbt step: the command line, dbt's output and errors, the table-checksum fingerprint.

A PostgreSQL warehouse is tried from eltmake's own process before dbt starts, so that an
unreachable server, a wrong password or a missing database fails the step in one line naming the
setting (dbt's own message is longer, and with a password variable missing dbt-postgres sends
the template text as the password)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import StepError, StepResult, digest, executable_path
from eltmake_dbt import config as _config
from eltmake_dbt import manifest as _manifest
from eltmake_dbt import warm as _warm
from eltmake_dbt.launch import launch_argv, secret_vars
from eltmake_dbt.transform import relations, step_info, step_uids

if TYPE_CHECKING:
    from eltmake.api import Project, StepContext
    from eltmake_dbt.config import Transformer
    from eltmake_dbt.manifest import Info

LOCK_RETRY_S = 30.0


# Node files whose edit can be run alone (with what depends on it); any other changed file (a
# macro, YAML, dbt_project.yml) may touch any node, so the whole selection runs.
NODE_FILES = (".sql", ".py", ".csv")


def changed_nodes(
    project: Project, tf: Transformer, info: Info, uids: list[str], changed
) -> list[str] | None:
    """The dbt-project paths of the selected nodes whose files are all that changed, or None.

    From :attr:`StepContext.changed_inputs` (None unless only input files changed since the last
    successful run): when each changed file is a selected model, seed, snapshot or singular
    test, the step runs those and what depends on them within its selection, as ``dbt build
    --select path:FILE+,SELECTOR`` (``eltmake watch``: an edited model re-runs with its
    descendants only). The output fingerprint still covers every relation of the selection.
    """
    if not changed:
        return None
    by_rel = {}
    for uid in uids:
        node = info.nodes[uid]
        if node.get("path") and node.get("t") in ("model", "seed", "snapshot", "test"):
            by_rel[tf.rel(project, node["path"])] = node
    picked = []
    for rel in changed:
        node = by_rel.get(rel)
        if node is None or not rel.endswith(NODE_FILES):
            return None
        if node["t"] == "test" and node.get("test_type") != "singular":
            return None
        picked.append(node["path"])
    return sorted(set(picked))


def argv_for(
    exe: str,
    tf: Transformer,
    cfg: dict[str, Any],
    full_refresh: bool,
    only: list[str] | None = None,
) -> list[str]:
    command = cfg.get("command", "build")
    argv = [exe, command]
    if tf.target:
        argv += ["--target", tf.target]
    variables = {**tf.vars, **(cfg.get("vars") or {})}
    if variables:
        argv += ["--vars", json.dumps(variables, sort_keys=True)]
    select = _config.as_list(cfg.get("select"))
    exclude = _config.as_list(cfg.get("exclude"))
    if only:
        select = [f"path:{p}+" + (f",{s}" if s else "") for p in only for s in select or [""]]
    if select:
        argv += ["--select", *select]
    if exclude:
        argv += ["--exclude", *exclude]
    if (full_refresh or cfg.get("full_refresh")) and command in ("build", "run", "seed"):
        argv.append("--full-refresh")
    return argv


def _start(
    ctx: StepContext, argv: list[str], hide: dict[str, Any], **kwargs: Any
) -> subprocess.Popen:
    """Start dbt; with secret vars, through the launcher, whose arguments file lives in a
    private folder only until the launcher has read it."""
    import os
    import time

    kwargs.update(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not hide:
        return ctx.popen(argv, **kwargs)
    with ctx.private_dir() as private:
        launched = launch_argv(argv, private)
        if launched is argv:  # no environment to launch from: as it is
            return ctx.popen(argv, **kwargs)
        argv = launched
        proc = ctx.popen(argv, **kwargs)
        deadline = time.monotonic() + 60
        while os.path.exists(argv[-1]) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    return proc


def run_step(ctx: StepContext) -> StepResult:
    project, step = ctx.project, ctx.step
    tf, info = step_info(project, step)
    exe = executable_path(project, tf.spec())
    cfg = step.target.config
    uids = step_uids(project, step)[2]
    if uids == []:
        raise StepError(nothing_selected(step.name, info, step.params))
    only = None
    if uids and not cfg.get("full_refresh"):
        only = changed_nodes(project, tf, info, uids, getattr(ctx, "changed_inputs", None))
    if only:
        ctx.log(f"only what changed, and what depends on it: {', '.join(only)}")
    argv = argv_for(exe, tf, cfg, ctx.full_refresh, only)
    env = _config.dbt_env(project, tf, ctx.env)
    check_connection(project, tf, step.name, env)
    db = _config.database_file(project, tf)
    if db is not None:  # DuckDB creates the file, not its folder ("data/warehouse.duckdb")
        db.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def show(raw: str) -> None:
        line = _manifest.clean_line(raw)
        lines.append(line)
        ctx.log(line)
        if " START " in line or line.lstrip()[:1].isdigit() and " of " in line:
            ctx.progress(line.strip()[:80])

    with _manifest.project_lock(project, tf):
        ctx.progress("dbt " + step.params["command"])
        rc = None
        if ctx.warm and _warm.enabled(tf, exe):
            try:
                rc = _warm.run(
                    project, tf, exe, argv[1:], env, info.files, show, ctx.cancelled, ctx.log
                )
            except _warm.Unavailable as e:
                ctx.log(f"warm dbt: {e}; running dbt cold")
                lines.clear()
        if rc is None:
            proc = _start(ctx, argv, secret_vars(tf, cfg), cwd=str(tf.project_dir), env=env)
            for raw in proc.stdout:
                show(raw.decode(errors="replace"))
            rc = proc.wait()
        if rc != 0:
            if ctx.cancelled.is_set():
                raise StepError(f"{step.name}: cancelled")
            headline, tail = _manifest.error_summary(lines)
            why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            raise StepError(
                f"{step.name}: dbt {step.params['command']} failed ({why}): {headline}", tail
            )
        stats = run_stats(tf)
        uids = step_uids(project, step)[2] or []
        fingerprint = output_fingerprint(project, tf, info, uids, ctx)
    return StepResult(
        fingerprint=fingerprint,
        stats=stats,
        message=_summary(stats),
        warnings=dbt_warnings(lines),
    )


WARNINGS_SHOWN = 5
_WARNING = re.compile(r"^\[WARNING\](?:\[(\w+)\])?:?\s*(.*)$")


def dbt_warnings(lines: list[str]) -> list[str]:
    """What dbt warned about in a run that succeeded (a test configured to warn, a deprecation),
    one line each: shown under the step's ``built`` line even without ``-v``, as a cold or warm
    run printed them."""
    out: list[str] = []
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith("Warning in "):  # "Warning in test x (path)", then what it found
            detail = lines[i + 1].strip() if i + 1 < len(lines) else ""
            text = f"{text}: {detail}" if detail else text
        elif m := _WARNING.match(text):
            text = f"{m[1]}: {m[2]}" if m[1] else m[2]
        else:
            continue
        if text and text not in out:
            out.append(text)
    if len(out) > WARNINGS_SHOWN:
        more = len(out) - WARNINGS_SHOWN
        out = [*out[:WARNINGS_SHOWN], f"and {more} more (-v shows dbt's output)"]
    return out


def nothing_selected(name: str, info: Info, data: dict[str, Any]) -> str:
    """A selection that matches nothing is a typo more often than not: say so, with a hint."""
    from eltmake.api import did_you_mean

    words = [w for w in data["select"] if ":" not in w]
    names = {n["name"] for n in info.nodes.values()}
    names |= {part for n in info.nodes.values() for part in n.get("fqn", [])[1:-1]}
    hint = next((h for w in words if (h := did_you_mean(w.strip("+@"), names))), "")
    return (
        f"{name}: select {' '.join(data['select']) or '(all)'!r} matches no node that dbt "
        f"{data['command']} runs{hint}; `eltmake invoke {data['transformer']} -- ls --select ...` "
        "shows what a selector matches"
    )


def run_stats(tf: Transformer) -> dict[str, Any]:
    """Counts by status from dbt's run_results.json: ``{"success": 5, "pass": 12}``."""
    try:
        results = json.loads((tf.project_dir / "target" / "run_results.json").read_bytes())
    except (OSError, ValueError):
        return {}
    counts: dict[str, int] = {}
    for r in results.get("results", []):
        status = str(r.get("status"))
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


def _summary(stats: dict[str, Any]) -> str:
    return ", ".join(f"{n} {s}" for s, n in stats.items())


def check_connection(project: Project, tf: Transformer, name: str, env: dict[str, str]) -> None:
    """Fail in one line, before dbt starts, when the PostgreSQL warehouse cannot be used."""
    import eltmake_warehouse as W

    wh, _ = _config.models_warehouse(project, tf)
    prof = _config.user_profile(project, tf)
    if prof is not None and prof.type == "postgres" and "password" in prof.unknown:
        raise StepError(
            f"{name}: {prof.file.name}: {prof.name}.outputs.{prof.target}.password "
            f"{prof.unknown['password']}: set it (dbt-postgres would send the template text as "
            "the password)"
        )
    if wh is None or wh.type != "postgres":
        return
    try:
        conn = W.pg_connect(
            wh.settings,
            env,
            where=_config.warehouse_where(tf),
            password=_config.profile_password(project, tf),
            password_where="PGPASSWORD" if prof is None else f"{prof.file.name} password",
        )
    except W.Unreachable as e:
        raise StepError(f"{name}: {e}") from None
    except W.CannotCheck as e:
        W.note_once(str(e))
        return
    conn.close()


def output_fingerprint(
    project: Project, tf: Transformer, info: Info, uids: list[str], ctx: StepContext
) -> str | None:
    """An order-independent checksum of every relation the step built, or None (use the key).

    Computed in the database after dbt has exited, never by fetching rows: per relation, its
    columns with their types, its row count and the sum of its row hashes (DuckDB: read-only
    open, ``sum(hash(t))``; PostgreSQL: ``sum(hashtextextended(t::text, 0))`` with the session's
    text formats pinned). A model rebuilt with the same rows gives the same fingerprint, so the
    steps below it are skipped (early cutoff). A warehouse eltmake cannot read: None, and the
    core uses the step's key.
    """
    import eltmake_warehouse as W

    wh, _ = _config.models_warehouse(project, tf)
    rels = relations(info, uids)
    if wh is None or not rels:
        return None
    try:
        if wh.type == "duckdb":
            db = _config.database_file(project, tf)
            assert db is not None
            sums = table_checksums(db, rels)
            W.forget_duckdb(db)
        else:
            conn = W.pg_connect(
                wh.settings,
                {**ctx.env, **tf.env},
                where=_config.warehouse_where(tf),
                password=_config.profile_password(project, tf),
            )
            try:
                sums = pg_checksums(conn, rels)
            finally:
                conn.close()
    except Exception as e:  # a fingerprint is an optimisation: never fail a good run over it
        ctx.log(f"(no table checksums, downstream steps re-run: {type(e).__name__}: {e})")
        return None
    return digest(sums)


# Pinned so that a row's text, and so its hash, does not depend on the server's or the role's
# settings (measured: TimeZone and DateStyle change it).
PG_SESSION = (
    "set TimeZone = 'UTC'",
    "set DateStyle = 'ISO, MDY'",
    "set IntervalStyle = 'postgres'",
    "set extra_float_digits = 1",
    "set bytea_output = 'hex'",
)


def pg_checksums(conn: Any, rels: list[tuple[str, str]]) -> dict[str, Any]:
    """``{schema.name: [columns, count, sum of row hashes]}`` on PostgreSQL, one query each.

    ``sum``, not ``bit_xor`` (xor cancels duplicate rows); ``hashtextextended`` (64-bit) over the
    row's text; a view is checksummed by running it."""
    from psycopg import sql

    for statement in PG_SESSION:
        conn.execute(statement)
    out: dict[str, Any] = {}
    for schema, name in rels:
        regclass = '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
        cols = conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped order by attnum",
            [regclass],
        ).fetchall()
        if not cols:
            out[f"{schema}.{name}"] = None
            continue
        query = sql.SQL(
            "select count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) from {} as t"
        ).format(sql.Identifier(schema, name))
        count, total = conn.execute(query).fetchone()
        out[f"{schema}.{name}"] = [[list(c) for c in cols], count, str(total)]
    return out


def table_checksums(db: Path, rels: list[tuple[str, str]]) -> dict[str, Any]:
    """``{schema.name: [columns, count, sum of row hashes]}``, read-only; the connection is
    closed before returning (DuckDB allows one writing process: the next step may be one)."""
    from eltmake_warehouse import open_duckdb

    # Another process may write it right now (a load running in parallel): wait for it.
    con = open_duckdb(db, LOCK_RETRY_S)
    try:
        out: dict[str, Any] = {}
        for schema, name in rels:
            cols = con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = ? and table_name = ? order by ordinal_position",
                [schema, name],
            ).fetchall()
            if not cols:
                out[f"{schema}.{name}"] = None
                continue
            q = '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
            count, total = con.execute(f"select count(*), sum(hash(t)) from {q} as t").fetchone()
            out[f"{schema}.{name}"] = [[list(c) for c in cols], count, str(total)]
        return out
    finally:
        con.close()


def invoke(project: Project, name: str, args: list[str]) -> int | None:
    """``eltmake invoke NAME -- ARGS``: dbt in its environment, in the dbt project, with the
    profile eltmake uses (e.g. ``eltmake invoke dbt -- show --select fct_orders``)."""
    if name not in (project.tables.get(_config.TABLE) or {}):
        return None
    tf = _config.transformer(project, name)
    exe = _manifest.executable(project, tf, _manifest._stderr)
    env = _config.dbt_env(project, tf, dict(project.environ))
    return subprocess.call([exe, *args], cwd=tf.project_dir, env=env)
