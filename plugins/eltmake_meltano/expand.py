"""Meltano's environment-variable expansion, rewritten in eltmake's ``${VAR}`` syntax.

Meltano expands ``$VAR`` (upper case) and ``${VAR}`` in config values at run time, an unset
variable becoming the empty string, and ``\\$VAR`` is a literal. eltmake knows ``${VAR}`` (an error
when unset: a typo is reported instead of sending an empty password), ``${VAR:-default}`` and
``$${`` for a literal ``${``. The rewrite:

* ``$VAR`` and ``${VAR}`` become ``${VAR}``; when the project's (or the environment's) ``env``
  gives VAR a value, ``${VAR:-value}``, so the shell and ``.env`` still win as in Meltano;
* ``$MELTANO_PROJECT_ROOT/x`` at the start of a value becomes the relative path ``x``: eltmake
  runs every tool in the project folder;
* pipeline variables (``$MELTANO_EXTRACT__LOAD_SCHEMA``, ``$MELTANO_EXTRACTOR_NAMESPACE``) that
  Meltano sets per ``tap target`` pair are replaced by the value for the pair when there is one;
* any other ``${`` becomes ``$${`` so that eltmake does not read it as a variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Meltano's ENV_VAR_PATTERN (meltano.core.utils), plus a bare "${" to escape for eltmake.
_PATTERN = re.compile(
    r"(?P<escape>\\)?\$(?:\{(?P<curly>\w+)\}|(?P<normal>[A-Z][A-Z0-9_]*))|(?P<brace>\$\{)"
)
_ELTMAKE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROJECT_ROOT = "MELTANO_PROJECT_ROOT"
PIPELINE_VARS = (
    "MELTANO_EXTRACT__LOAD_SCHEMA",
    "MELTANO_EXTRACTOR_NAMESPACE",
    "MELTANO_EXTRACT__NAMESPACE",
)


@dataclass
class Expander:
    """Rewrites strings; remembers which variables the result needs and what it could not do."""

    defaults: dict[str, str] = field(default_factory=dict)  # from meltano.yml's env
    pipeline: dict[str, str] | None = None  # pipeline variables for one tap-target pair
    note: Callable[[str, str], None] = lambda where, reason: None
    needed: set[str] = field(default_factory=set)  # ${VAR} without a default

    def __call__(self, text: str, where: str) -> str:
        out: list[str] = []
        pos = 0
        for m in _PATTERN.finditer(text):
            out.append(text[pos : m.start()])
            pos = m.end()
            if m["brace"]:
                out.append("$${")
                continue
            var = m["curly"] or m["normal"]
            if m["escape"]:
                out.append(f"$${{{var}}}" if m["curly"] else f"${var}")
                continue
            if var == PROJECT_ROOT:
                rest = text[pos:]
                if m.start() == 0 and (rest.startswith("/") or not rest):
                    # eltmake runs tools in the project folder: a relative path means the same.
                    pos += 1 if rest.startswith("/") else 0
                    if not rest or rest == "/":
                        out.append(".")
                    continue
                self.note(
                    where,
                    f"${PROJECT_ROOT} inside a value: kept as ${{{PROJECT_ROOT}}}; set it in .env "
                    "(eltmake runs tools in the project folder, so a relative path may do)",
                )
            if var in PIPELINE_VARS:
                if self.pipeline is not None and var in self.pipeline:
                    out.append(self.pipeline[var].replace("${", "$${"))
                    continue
                self.note(
                    where,
                    f"${var} is set by Meltano per pipeline; kept as ${{{var}}}: set the value "
                    "(the extractor's namespace) in config or in .env",
                )
            if not _ELTMAKE_NAME.match(var):
                self.note(where, f"${{{var}}} is not a variable name eltmake reads; kept as text")
                out.append(f"$${{{var}}}")
                continue
            default = self.defaults.get(var)
            if default is not None and "}" not in default and "$" not in default:
                out.append(f"${{{var}:-{default}}}")
            else:
                out.append(f"${{{var}}}")
                self.needed.add(var)
        out.append(text[pos:])
        return "".join(out)


def references(text: str) -> list[str]:
    """The variables a Meltano string expands (not the escaped ones)."""
    return [
        m["curly"] or m["normal"]
        for m in _PATTERN.finditer(text)
        if not m["escape"] and not m["brace"]
    ]
