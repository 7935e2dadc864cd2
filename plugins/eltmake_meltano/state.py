"""Meltano's state → eltmake's state store, so that the first eltmake run goes on from Meltano's
bookmarks.

Meltano keeps state in its system database (``.meltano/meltano.db``, table ``state``: columns
``state_id``, ``partial_state``, ``completed_state``, ``updated_at``; JSON text), one row per
state id such as ``dev:tap-gitlab-to-target-postgres`` (environment, then
``EXTRACTOR-to-LOADER``, then an optional suffix), or ``NAME`` for a schedule run with
``--state-id=NAME``. The state a run resumes from is the partial state merged over the completed
one (``MeltanoState.json_merged``), and the Singer state is its ``singer_state`` key.

eltmake keeps the bare Singer state (``{"bookmarks": ...}``) per state id in
``.eltmake/state.db``. Everything that knows how eltmake names and stores state is in this
module: :func:`eltmake_state_id` and :func:`open_store`, so that scoping state by environment (as
the core is about to) changes these two functions only.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import ConfigError

if TYPE_CHECKING:
    from eltmake.api import Project, Target
    from eltmake_meltano.meltano import MeltanoProject

SINGER_STATE_KEY = "singer_state"


def eltmake_state_id(project: Project, target: Target) -> str:
    """The id under which eltmake keeps the bookmarks of ``target`` in ``project`` (loaded with
    its ``--env``): what the target's recipe says (the Singer recipe scopes a default id by
    environment), so the importer and the build can never disagree."""
    step = project.recipes[target.kind].make_step(project, target)
    return step.params.get("state_id", target.name)


def open_store(project: Project) -> Any:
    """eltmake's state store of ``project``."""
    from eltmake.api import open_state

    return open_state(project)


# --- reading Meltano's state ------------------------------------------------------------------


def meltano_merge(src: Any, dest: Any) -> Any:
    """Meltano's ``utils.merge``: ``src`` merged into a copy of ``dest`` at depth."""
    if not isinstance(src, dict):
        return dest if src is None else src
    out = dict(dest) if isinstance(dest, dict) else {}
    for k, v in src.items():
        out[k] = meltano_merge(v, out.get(k)) if isinstance(v, dict) else v
    return out


def effective_state(partial: Any, completed: Any) -> Any:
    """What Meltano passes to the next run: partial state merged over completed state."""
    return meltano_merge(partial or {}, completed or {})


def singer_state(value: Any) -> dict[str, Any] | None:
    """The Singer state inside a Meltano state value, or None when it holds none."""
    if isinstance(value, dict) and ("completed" in value or "partial" in value):
        value = effective_state(value.get("partial"), value.get("completed"))
    if isinstance(value, dict) and isinstance(value.get(SINGER_STATE_KEY), dict):
        inner = value[SINGER_STATE_KEY]
        return inner or None
    return None


def system_db(project: MeltanoProject) -> Path | None:
    """The SQLite system database that holds the project's state, or None when there is none.

    Raises ConfigError when the state lives where eltmake cannot read it (another database, or
    a state backend such as S3): export it with ``meltano state get`` instead.
    """
    backend = project.data.get("state_backend")
    uri = backend.get("uri") if isinstance(backend, dict) else None
    if isinstance(uri, str) and uri and uri != "systemdb":
        raise ConfigError(
            f"{project.file.name}: state_backend.uri: state is kept at {uri.split('://')[0]}://..., "
            "which eltmake does not read; export each id with `meltano state get ID > ID.json` "
            "and import it with --state-file ID.json --state-id ID"
        )
    db_uri = project.data.get("database_uri")
    if isinstance(db_uri, str) and db_uri:
        if not db_uri.startswith("sqlite:///"):
            raise ConfigError(
                f"{project.file.name}: database_uri: the system database is not SQLite; export "
                "state with `meltano state get ID > ID.json` and use --state-file"
            )
        raw = db_uri.removeprefix("sqlite:///")
        for var in ("${MELTANO_PROJECT_ROOT}", "$MELTANO_PROJECT_ROOT"):
            raw = raw.replace(var, str(project.root))
        path = Path(raw) if Path(raw).is_absolute() else project.root / raw
    else:
        path = project.root / ".meltano" / "meltano.db"
    return path if path.is_file() else None


def read_system_db(path: Path, shown: str) -> dict[str, Any]:
    """``{state_id: effective Meltano state}`` from a system database, opened read-only."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ConfigError(f"{shown}: cannot open Meltano's system database: {e}") from None
    try:
        rows = db.execute("SELECT state_id, partial_state, completed_state FROM state").fetchall()
    except sqlite3.DatabaseError as e:
        raise ConfigError(
            f"{shown}: no readable state table ({e}); is this the system database of Meltano 2.7 "
            "or later? Otherwise export with `meltano state get ID > ID.json`"
        ) from None
    finally:
        db.close()
    out: dict[str, Any] = {}
    for state_id, partial, completed in rows:
        try:
            out[state_id] = effective_state(
                json.loads(partial) if partial else None,
                json.loads(completed) if completed else None,
            )
        except ValueError:
            raise ConfigError(f"{shown}: state {state_id!r} is not valid JSON") from None
    return out


def read_state_file(path: Path, state_id: str) -> dict[str, Any]:
    """The output of ``meltano state get STATE_ID`` saved to a file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e}); save `meltano state get ID` to it") from None
    return {state_id: value}


def list_state_ids(project: MeltanoProject) -> list[str]:
    """Meltano's state ids, best effort (for naming pipelines Meltano ran): [] when unreadable."""
    try:
        path = system_db(project)
        return sorted(read_system_db(path, str(path))) if path else []
    except ConfigError:
        return []


# --- mapping onto eltmake targets ----------------------------------------------------------------


@dataclass
class Plan:
    """What to write: eltmake state id → (Singer state, Meltano ids, eltmake targets)."""

    writes: dict[str, tuple[dict[str, Any], list[str], list[str]]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (Meltano id, why)


def plan(
    states: dict[str, Any], meltano: MeltanoProject, project: Project, env_name: str | None
) -> Plan:
    """Map each Meltano state id onto the extract-load targets of the eltmake project.

    ``ENV:TAP-to-LOADER[:SUFFIX]`` belongs to every target that extracts TAP and loads LOADER (or
    a per-pipeline copy ``LOADER--TAP``); only ids of ``env_name`` are taken, since the other
    environments' bookmarks would land on the same targets. An id without environment (a
    schedule's ``--state-id``) belongs to the target with that name or ``state_id``.
    """
    from eltmake_meltano.translate import split_state_id

    targets = [t for t in project.targets.values() if t.kind == "singer"]
    result = Plan()
    for sid in sorted(states):
        value = singer_state(states[sid])
        if value is None:
            result.skipped.append((sid, "holds no Singer state"))
            continue
        direct = [t for t in targets if sid in (t.name, t.config.get("state_id"))]
        matches = direct
        if not direct:
            parsed = split_state_id(sid, meltano)
            if parsed is None:
                result.skipped.append((sid, "names no extractor-to-loader pair of this project"))
                continue
            env, tap, loader = parsed
            if env_name is not None and env != env_name:
                result.skipped.append(
                    (
                        sid,
                        f"environment {env!r}; import it with --env {env} (eltmake keeps one "
                        "state per target, so one environment at a time)",
                    )  # fmt: skip
                )
                continue
            parts = sid.split(":")
            suffix = parts[2] if len(parts) == 3 else None
            matches = [
                t
                for t in targets
                if t.config.get("extract") == tap
                and t.config.get("load") in (loader, f"{loader}--{tap}")
            ]
            if suffix:
                result.skipped.append(
                    (sid, f"has the state id suffix {suffix!r}; eltmake has none")
                )
                continue
        if not matches:
            result.skipped.append((sid, "no eltmake target extracts and loads this pair"))
            continue
        for t in matches:
            eid = eltmake_state_id(project, t)
            _, ids, names = result.writes.setdefault(eid, (value, [], []))
            if sid not in ids:
                ids.append(sid)
            names.append(t.name)
    return result


def write(project: Project, the_plan: Plan, force: bool) -> None:
    """Write the planned states; refuse (before writing anything) to replace eltmake state that
    already exists, unless ``force``: eltmake's bookmarks may be newer than Meltano's."""
    store = open_store(project)
    try:
        existing = [eid for eid in the_plan.writes if store.get(eid) is not None]
        if existing and not force:
            raise ConfigError(
                f"eltmake already has state for {', '.join(existing)}; --force replaces it with "
                "Meltano's (`eltmake state show ID` shows it)"
            )
        for eid, (value, _, _) in the_plan.writes.items():
            with store.lease(eid):
                store.set(eid, value)
    finally:
        store.close()
