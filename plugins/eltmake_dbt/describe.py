"""``eltmake config NAME`` for a transformer: dbt's resolved profile, target and vars.

The ``config`` command belongs to the Singer plugin (it prints a tool's resolved config); for a
name that is no Singer tool it asks every plugin module for a ``describe_config(project, name)``
function (a plain function, not a hook) and prints the first answer. This is the dbt plugin's.
Read-only: it writes no profile, installs nothing and starts no dbt.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from eltmake_dbt import config as _config

if TYPE_CHECKING:
    from eltmake.api import Project

MASK = "****"
SECRET_KEYS = ("password", "pass", "token", "secret", "private_key", "keyfile_json", "key")


def _redact(output: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in output.items():
        secret = any(s == k or k.endswith(s) for s in SECRET_KEYS)
        out[k] = MASK if secret and v not in (None, "") else v
    return out


def describe(project: Project, name: str) -> dict[str, Any] | None:
    """What dbt runs with for transformer ``name``; None when ``name`` is not a transformer."""
    if name not in (project.tables.get(_config.TABLE) or {}):
        return None
    from eltmake_dbt.transform import SECRET_VAR

    tf = _config.transformer(project, name)
    rel = os.path.relpath
    out: dict[str, Any] = {
        "transformer": name,
        "project_dir": rel(tf.project_dir, project.root),
        "profile": _config.profile_name(tf),
        "vars": tf.vars,
        "env": {k: MASK if SECRET_VAR.search(k) else v for k, v in tf.env.items()},
    }
    if tf.profiles_dir is None:
        gen = _config.generated_output(project, tf)
        out["profiles_dir"] = rel(tf.state_dir(project), project.root) + " (generated)"
        out["target"] = tf.target or _config.PROFILE_TARGET
        out["output"] = gen
        assert tf.warehouse is not None
        out["warehouse"] = _config.warehouse_where(tf)
        if gen["type"] == "postgres":
            has = (
                "set"
                if (project.environ.get("PGPASSWORD") or tf.env.get("PGPASSWORD"))
                else "not set"
            )
            out["password"] = f"from PGPASSWORD in dbt's environment ({has})"
    else:
        prof = _config.user_profile(project, tf)
        assert prof is not None
        out["profiles_dir"] = rel(tf.profiles_dir, project.root)
        if prof.error:
            out["error"] = prof.error
        else:
            out["target"] = prof.target
            out["output"] = _redact(prof.output)
            if prof.unknown:
                out["not rendered"] = prof.unknown
    wh, why = _config.models_warehouse(project, tf)
    out["checks"] = (
        f"on ({wh.type}): relations must exist to skip a step; row checksums for early cutoff"
        if wh is not None
        else f"off: {why}"
    )
    return out
