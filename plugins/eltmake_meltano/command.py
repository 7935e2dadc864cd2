"""``eltmake import meltano``: the command's logic, free of argparse (the CLI wiring is one
function in ``__init__``, so a change of the command hook touches nothing here).

Without ``--state`` it writes ``eltmake.toml`` beside ``meltano.yml`` and checks that the result
loads; with ``--state`` it copies Meltano's bookmarks into eltmake's store.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from eltmake.api import ConfigError, EltmakeError

PROJECT_FILE = "eltmake.toml"
PLACEHOLDER = "eltmake-import-check"


@dataclass
class Options:
    project_dir: str | None = None  # -C
    path: str | None = None  # meltano.yml, or the folder holding it
    force: bool = False
    dry_run: bool = False
    state: bool = False
    state_file: str | None = None
    state_id: str | None = None
    env_name: str | None = None


def run(opts: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    from eltmake_meltano.meltano import read_project

    file = meltano_file(opts)
    meltano = read_project(file)
    if opts.state or opts.state_file or opts.state_id:
        return _import_state(opts, meltano, out, err)
    return _import_project(opts, meltano, out, err)


def meltano_file(opts: Options) -> Path:
    base = Path(opts.project_dir or ".")
    path = Path(opts.path) if opts.path else base / "meltano.yml"
    if opts.path and not path.is_absolute() and not path.exists():
        path = base / opts.path
    if path.is_dir():
        path = path / "meltano.yml"
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; give the path of meltano.yml (eltmake import meltano PATH)"
        )
    return path.resolve()


# --- the project file ---------------------------------------------------------------------------


def _import_project(opts: Options, meltano, out: TextIO, err: TextIO) -> int:
    from eltmake_meltano.state import list_state_ids
    from eltmake_meltano.translate import translate

    result = translate(meltano, list_state_ids(meltano))
    target = meltano.root / PROJECT_FILE
    if target.exists() and not opts.force and not opts.dry_run:
        raise ConfigError(
            f"{target}: already exists; --force replaces it, --dry-run prints the import instead"
        )
    problem = check_loads(meltano.root, result.text, result.needed, result.environments)
    if opts.dry_run:
        out.write(result.text)
    else:
        tmp = target.with_name(f".{PROJECT_FILE}.{os.getpid()}.tmp")
        tmp.write_text(result.text, encoding="utf-8")
        os.replace(tmp, target)
        targets = result.text.count("\n[targets.")
        err.write(f"wrote {target} ({targets} targets)\n")
    if result.notes:
        err.write(f"not translated ({len(result.notes)}; also listed at the end of the file):\n")
        for note in result.notes:
            err.write(f"  - {note}\n")
    unset = [v for v in result.needed if v not in os.environ]
    if unset:
        err.write(f"set before building (in .env or the shell): {', '.join(unset)}\n")
    if meltano.default_environment in result.environments:
        err.write(
            f"Meltano's default environment was {meltano.default_environment!r}: "
            f"build with `eltmake build --env {meltano.default_environment}`\n"
        )
    if problem:
        err.write(f"the result does not load yet: {problem}\n")
        return 1
    err.write("the result loads; next: `eltmake import meltano --state` to carry the bookmarks\n")
    return 0


def check_loads(root: Path, text: str, needed: list[str], environments: list[str]) -> str | None:
    """Load ``text`` as the project file of ``root`` (and each environment), without writing it
    there: a scratch folder links to every file of the project beside the new project file.

    Variables the file needs are given placeholder values (the check is about the file, not the
    shell it runs in), and no plugin's ``eltmake_infer_deps`` runs: inference may install and run
    dbt, which checking a file must not do. Returns the first problem, or None.
    """
    scratch = Path(tempfile.mkdtemp(prefix="eltmake-import-"))
    try:
        for entry in root.iterdir():
            if entry.name not in (PROJECT_FILE, ".eltmake"):
                os.symlink(entry, scratch / entry.name)
        (scratch / PROJECT_FILE).write_text(text, encoding="utf-8")
        environ = dict(os.environ)
        for var in needed:
            environ.setdefault(var, PLACEHOLDER)
        for env_name in [None, *environments]:
            try:
                load_quietly(scratch, env_name, environ)
            except EltmakeError as e:
                return f"{'--env ' + env_name + ': ' if env_name else ''}{e}".replace(
                    str(scratch), str(root)
                )
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_quietly(root: Path, env_name: str | None, environ: dict[str, str]):
    """``load_project`` without inferred edges (see :func:`check_loads`): the result is checked
    as a project file, and needs no tool."""
    from eltmake.api import load_project

    return load_project(root, env_name=env_name, environ=environ, infer=False)


# --- state --------------------------------------------------------------------------------------


def _import_state(opts: Options, meltano, out: TextIO, err: TextIO) -> int:
    from eltmake_meltano import state as st
    from eltmake_meltano.translate import split_state_id

    if not (meltano.root / PROJECT_FILE).is_file():
        raise ConfigError(
            f"{meltano.root / PROJECT_FILE}: not found; run `eltmake import meltano` first, so "
            "that the bookmarks have targets to go to"
        )
    if opts.state_file:
        if not opts.state_id:
            raise ConfigError(
                "--state-file: needs --state-id, the Meltano state id the file was saved from "
                "(`meltano state get ID > FILE`)"
            )
        states = st.read_state_file(Path(opts.state_file), opts.state_id)
    else:
        if opts.state_id:
            raise ConfigError("--state-id: goes with --state-file")
        path = st.system_db(meltano)
        if path is None:
            raise ConfigError(
                f"{meltano.root / '.meltano' / 'meltano.db'}: not found; has Meltano run here? "
                "Or export with `meltano state get ID > ID.json` and use --state-file"
            )
        states = st.read_system_db(path, str(path.relative_to(meltano.root)))
    env_name = opts.env_name or meltano.default_environment
    if env_name is None:
        envs = {p[0] for s in states if (p := split_state_id(s, meltano))}
        if len(envs) > 1:
            raise ConfigError(
                f"Meltano state for the environments {', '.join(sorted(envs))}: choose one "
                "with --env NAME (eltmake keeps one state per target)"
            )
        env_name = envs.pop() if envs else None
    # Only the targets matter here: variables the file reads need not be set to import state.
    text = (meltano.root / PROJECT_FILE).read_text(encoding="utf-8")
    environ = dict(os.environ)
    for var in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        environ.setdefault(var, PLACEHOLDER)
    project = load_quietly(
        meltano.root, env_name if env_name in _eltmake_envs(meltano.root) else None, environ
    )
    the_plan = st.plan(states, meltano, project, env_name)
    if the_plan.writes and not opts.dry_run:
        st.write(project, the_plan, opts.force)
    for eid, (value, ids, names) in the_plan.writes.items():
        streams = len(value.get("bookmarks") or {}) if isinstance(value, dict) else 0
        out.write(
            f"{'would copy' if opts.dry_run else 'copied'} {', '.join(ids)} -> state {eid} "
            f"(targets {', '.join(names)}; {streams} stream bookmark{'s' * (streams != 1)})\n"
        )
    for sid, why in the_plan.skipped:
        err.write(f"not copied: {sid}: {why}\n")
    if not the_plan.writes:
        err.write("no state copied\n")
    return 0


def _eltmake_envs(root: Path) -> set[str]:
    import tomllib

    try:
        data = tomllib.loads((root / PROJECT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    envs = data.get("environments")
    return set(envs) if isinstance(envs, dict) else set()
