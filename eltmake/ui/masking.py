"""What the UI shows of definitions and state, with secrets masked by the core's one rule
(:mod:`eltmake.redact`): a value under a key named like a secret is ``****``, and so is, anywhere
in text, a value that the project holds as a secret (in a target's table, a plugin's table,
``.env`` or the environment). Step output needs nothing here: the scheduler masked it already."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eltmake.redact import MASK, Redactor, looks_secret

if TYPE_CHECKING:
    from eltmake.project import Project


def secret_values(obj: Any, secret: bool = False) -> list[str]:
    """Every value held under a key named like a secret, at any depth, as text."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += secret_values(v, secret or looks_secret(str(k)))
    elif isinstance(obj, list | tuple):
        for v in obj:
            out += secret_values(v, secret)
    elif secret and obj not in (None, "") and not isinstance(obj, bool):
        out.append(str(obj))
    return out


def project_redactor(project: Project) -> Redactor:
    """The secrets of a whole project: its tables, ``.env`` and the environment."""
    values = secret_values({n: t.config for n, t in project.targets.items()})
    values += secret_values(project.tables)
    values += secret_values(project.dotenv) + secret_values(project.environ)
    return Redactor(values)


def mask(obj: Any, redact: Redactor, secret: bool = False, by_name: bool = True) -> Any:
    """A copy for display: secret values become ``****``; with ``by_name``, so does every value
    under a key named like a secret (a definition; not a state value, where ``replication_key``
    names a column)."""
    if isinstance(obj, dict):
        return {
            k: mask(v, redact, secret or (by_name and looks_secret(str(k))), by_name)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [mask(v, redact, secret, by_name) for v in obj]
    if secret and obj not in (None, ""):
        return MASK
    return redact(obj) if isinstance(obj, str) else obj
