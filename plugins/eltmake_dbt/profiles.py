"""A project's own ``profiles.yml``: which database its models land in, so that the same checks
(is every relation still there?) and the same row checksums apply as with a generated profile.

dbt renders a profile with Jinja. eltmake renders the part that names a database and nothing
more: values that are plain, or ``{{ env_var('X') }}`` / ``{{ env_var('X', 'default') }}`` with
dbt's ``| int``, ``| as_number``, ``| as_text`` or ``| trim`` filters, against the project's
environment (with ``.env`` and the transformer's ``env``). Anything else (``{{ target.name }}``,
``{% if %}``) leaves that value unknown, and the checks do not apply; ``eltmake config NAME``
says so.

PyYAML is imported only when the file changed since it was last read: the parsed YAML is kept
as JSON under ``.eltmake/dbt/NAME/`` with the file's stat, because importing a YAML parser costs
more than a whole no-op build.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eltmake.api import Project
    from eltmake_dbt.config import Transformer

_EXPR = re.compile(r"\{\{(.*?)\}\}", re.S)
_ENV_VAR = re.compile(
    r"""^\s*env_var\(\s*(['"])([^'"]+)\1\s*(?:,\s*(['"])(.*?)\3\s*)?\)\s*((?:\|\s*\w+\s*)*)$""",
    re.S,
)
# Settings whose env_var() is a credential, not a property of what dbt builds.
CREDENTIALS = {"password", "pass", "token", "private_key", "private_key_passphrase", "keyfile"}


class Unknown(Exception):
    """A value eltmake cannot render without dbt."""


@dataclass
class Profile:
    """The output dbt uses, rendered where eltmake can."""

    file: Path
    name: str
    target: str
    output: dict[str, Any] = field(default_factory=dict)  # rendered values (secrets included)
    unknown: dict[str, str] = field(default_factory=dict)  # key -> why it is unknown
    env_vars: dict[str, list[str]] = field(default_factory=dict)  # VAR -> keys that read it
    error: str | None = None  # the whole profile is unreadable (the step's dbt run says why)

    @property
    def type(self) -> str | None:
        t = self.output.get("type")
        return t if isinstance(t, str) else None


def render(value: Any, environ: dict[str, str], used: list[str]) -> Any:
    """A profile value with its ``env_var()`` calls resolved; raises :class:`Unknown`."""
    if not isinstance(value, str) or "{" not in value:
        return value
    if "{%" in value or "{#" in value:
        raise Unknown("uses Jinja statements")
    cast = None

    def one(m: re.Match) -> str:
        nonlocal cast
        call = _ENV_VAR.match(m.group(1))
        if call is None:
            raise Unknown(f"{{{{{m.group(1).strip()}}}}} is not an env_var() call")
        name, default = call.group(2), call.group(4)
        used.append(name)
        if name in environ:
            text = environ[name]
        elif default is not None:
            text = default
        else:
            raise Unknown(f"reads env_var('{name}'), which is not set")
        filters = [f.strip() for f in call.group(5).split("|") if f.strip()]
        for f in filters:
            if f in ("int", "as_number"):
                cast = f
            elif f == "trim":
                text = text.strip()
        return text

    out = _EXPR.sub(one, value)
    if cast is not None and _EXPR.fullmatch(value.strip()):
        try:
            return int(out) if cast == "int" else (int(out) if out.isdigit() else float(out))
        except ValueError:
            raise Unknown(f"{out!r} is not a number") from None
    return out


_memo: dict[str, tuple[list, Any]] = {}


def _parsed(project: Project, tf: Transformer, file: Path) -> Any:
    """The YAML of ``file``, from the JSON copy kept by its stat, else parsed (and kept)."""
    try:
        st = file.stat()
    except OSError as e:
        raise Unknown(f"cannot read {file}: {e.strerror}") from None
    sig = [str(file), st.st_size, st.st_mtime_ns, st.st_ino]
    memo = _memo.get(str(file))
    if memo is not None and memo[0] == sig:
        return memo[1]
    keep = tf.state_dir(project) / "profiles.json"
    try:
        cached = json.loads(keep.read_bytes())
        if cached.get("sig") == sig:
            _memo[str(file)] = (sig, cached["data"])
            return cached["data"]
    except (OSError, ValueError, AttributeError):
        pass
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unknown(f"{file.name} is not valid YAML: {first}") from None
    from eltmake.api import write_atomic

    try:
        text = json.dumps({"sig": sig, "data": data})
    except (TypeError, ValueError):  # dates and such: not worth keeping
        return data
    # A file written this very moment may change again within its mtime tick: not kept.
    if time.time() - st.st_mtime_ns / 1e9 > 2.0:
        write_atomic(keep, text, mode=0o600, best_effort=True)  # it may hold passwords
        _memo[str(file)] = (sig, data)
    return data


def read_profile(project: Project, tf: Transformer, profile_name: str) -> Profile:
    """The output of ``profile_name`` that dbt uses for this transformer (``target`` setting,
    else ``DBT_TARGET``, else the profile's ``target``), rendered."""
    assert tf.profiles_dir is not None
    file = tf.profiles_dir / "profiles.yml"
    environ = {**project.environ, **tf.env}
    prof = Profile(file=file, name=profile_name, target="")
    try:
        data = _parsed(project, tf, file)
    except Unknown as e:
        prof.error = str(e)
        return prof
    entry = data.get(profile_name) if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        prof.error = f"{file.name} has no profile {profile_name!r} (dbt_project.yml's profile)"
        return prof
    used: list[str] = []
    target = tf.target or environ.get("DBT_TARGET")
    if not target:
        try:
            target = str(render(entry.get("target", "default"), environ, used))
        except Unknown as e:
            prof.error = f"{profile_name}.target {e}"
            return prof
    prof.target = target
    outputs = entry.get("outputs")
    output = outputs.get(target) if isinstance(outputs, dict) else None
    if not isinstance(output, dict):
        prof.error = f"{file.name}: {profile_name}.outputs has no target {target!r}"
        return prof
    for key, value in output.items():
        names: list[str] = []
        try:
            prof.output[key] = render(value, environ, names)
        except Unknown as e:
            prof.unknown[key] = str(e)
        for n in names:
            prof.env_vars.setdefault(n, []).append(str(key))
    for n in used:
        prof.env_vars.setdefault(n, []).append("target")
    return prof


def keyed_env_vars(prof: Profile) -> list[str]:
    """The env vars of the profile that shape what dbt builds (not its credentials)."""
    return sorted(n for n, keys in prof.env_vars.items() if any(k not in CREDENTIALS for k in keys))


def duckdb_file(tf: Transformer, prof: Profile) -> Path | None:
    """The DuckDB file of a ``type: duckdb`` output (relative to the dbt project, where dbt runs);
    None for ``:memory:``, MotherDuck and other non-file paths."""
    path = prof.output.get("path")
    if not isinstance(path, str) or not path or path == ":memory:" or ":" in path.split("/")[0]:
        return None
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else tf.project_dir / p
