"""Reading Meltano's YAML files as Meltano reads them, with one-line errors.

Meltano parses ``meltano.yml`` with ruamel.yaml, which follows YAML 1.2; PyYAML (imported only
when an import runs, so eltmake's start-up never pays for it) follows YAML 1.1. The loader below
closes the differences that matter in a project file:

* only ``true``/``false`` are booleans (YAML 1.1 also reads ``yes``, ``no``, ``on``, ``off``, so a
  setting ``country: NO`` would become ``False``);
* timestamps stay the text that was written (``start_date: 2024-01-01`` reaches the tap as the
  string ``"2024-01-01"``, as it does from Meltano);
* a key given twice is an error, as in ruamel.yaml (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from eltmake.api import ConfigError

_loader_class: list[type] = []


def _loader() -> type:
    if _loader_class:
        return _loader_class[0]
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2's booleans, no timestamps and no duplicate keys."""

    resolvers: dict[Any, list] = {}
    bool_re = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
    for first, items in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = []
        for tag, regexp in items:
            if tag == "tag:yaml.org,2002:timestamp":
                continue
            if tag == "tag:yaml.org,2002:bool":
                regexp = bool_re
            kept.append((tag, regexp))
        resolvers[first] = kept
    Loader.yaml_implicit_resolvers = resolvers

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            k = loader.construct_object(key_node, deep=deep)
            try:
                hash(k)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                ) from None
            if k in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {k!r}", key_node.start_mark
                )
            out[k] = loader.construct_object(value_node, deep=deep)
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    _loader_class.append(Loader)
    return Loader


def load(path: Path, shown: str) -> Any:
    """The YAML document in ``path`` (``shown`` is how error messages name it).

    Raises a one-line :class:`ConfigError` for a missing, unreadable or malformed file, with the
    line and column where YAML stopped.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a folder, not a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{shown}:{line}: not UTF-8 text; save it as UTF-8") from None
    return loads(text, shown)


def loads(text: str, shown: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        raise ConfigError(
            f"{where}: invalid YAML: {problem}; fix the file and import again"
        ) from None
    except RecursionError:
        raise ConfigError(f"{shown}: invalid YAML: nested too deeply") from None
