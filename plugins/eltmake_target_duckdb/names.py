"""Table, schema and column names: one predictable rule, so dbt models can be written up front.

The rule (documented in docs/target-duckdb.md): lower-case the name, replace every character outside
``[a-z0-9_]`` with ``_``, and prefix ``_`` when the result is empty or starts with a digit. Two
properties of one stream that land on the same column name are told apart by a ``_2``, ``_3``...
suffix, in the order the properties were first seen (SCHEMA order, then record order).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^a-z0-9_]")


def sanitize(name: str) -> str:
    """Return the identifier eltmake uses for ``name`` (see the module docstring for the rule)."""
    safe = _UNSAFE.sub("_", name.lower())
    if not safe or safe[0].isdigit():
        safe = "_" + safe
    return safe


def split_stream(stream: str) -> tuple[str | None, str]:
    """Split a stream id into (source schema, table), as target-duckdb and pipelinewise do.

    ``public-orders`` is table ``orders`` from source schema ``public`` (the key ``schema_mapping``
    looks up); ``db-public-order-lines`` is table ``order_lines`` from ``public``; a name without a
    dash is the table itself.
    """
    parts = stream.split("-")
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) > 2:
        return parts[1], "_".join(parts[2:])
    return None, stream


def unique_column(name: str, taken: set[str]) -> str:
    """Return the column for property ``name`` that does not collide with ``taken`` (lower-case)."""
    base = sanitize(name)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def ident(name: str) -> str:
    """Quote an identifier for SQL."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """Quote a string literal for SQL."""
    return "'" + text.replace("'", "''") + "'"
