"""The project model: ``eltmake.toml`` read, interpolated, overridden and checked.

Every problem is raised as a :class:`~eltmake.errors.ConfigError` with one line naming the file,
the table and key, what is wrong and what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from eltmake.plugins import PluginManager
    from eltmake.step import RecipeSpec

PROJECT_FILE = "eltmake.toml"
CORE_TABLES = {"project", "targets", "environments"}
PROJECT_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "default": (str, list),
    "plugins": (list,),
    "description": (str,),
}
# Keys every target may have, whatever its recipe.
TARGET_KEYS: dict[str, tuple[type, ...]] = {
    "deps": (list,),
    "inputs": (list,),
    "outputs": (list,),
    "freshness": (str,),
    "description": (str,),
}
FRESHNESS_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Target:
    """One ``[targets.NAME]`` table. ``config`` is the whole table after interpolation."""

    name: str
    kind: str | None  # the recipe's kind ("command", "singer", "dbt"), None for an aggregate
    deps: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    freshness: str | None = None
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Project:
    """A loaded project. ``tables`` holds the top-level tables that plugins claimed."""

    root: Path
    file: Path
    name: str
    default: list[str]
    plugins: list[str]
    targets: dict[str, Target]
    tables: dict[str, dict[str, Any]]
    environ: dict[str, str]
    env_name: str | None = None
    recipes: dict[str, RecipeSpec] = field(default_factory=dict)
    inferred: list[tuple[str, str, str]] = field(default_factory=list)
    pm: PluginManager | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        """Where eltmake keeps its cache, state, tool environments and lock: ``.eltmake/``."""
        return self.root / ".eltmake"

    def where(self, *keys: str) -> str:
        """``eltmake.toml: targets.orders.deps`` — the prefix of every error message."""
        return f"{self.file.name}: {'.'.join(keys)}" if keys else self.file.name


def parse_freshness(value: str) -> float | None:
    """Seconds for a duration ("6h", "30m", "1.5d"); ``None`` for "always"/"never" (callers check)."""
    m = FRESHNESS_RE.match(value.strip())
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * _UNITS[m.group(2)]
