"""Column types: what a SCHEMA property becomes in DuckDB, how a column widens, how a value is read.

Three rules keep data from being lost:

* a JSON Schema maps to the narrowest DuckDB type that holds every value it allows
  (:func:`column_type`);
* a column never narrows: a later SCHEMA that wants a different type gets the existing type when
  it already holds the new values, else a wider one (:func:`widen`), and the ALTER runs in the same
  transaction as the rows that need it;
* a value is checked against its column while DuckDB reads the batch (:func:`read_spec`): an
  integer column accepts JSON integers (and integral floats such as ``5.0``) and nothing else, so
  ``1.5`` fails the load instead of being rounded, as DuckDB's own casts would; a DOUBLE column
  accepts an integer only when the double holds it exactly (9007199254740993 does not).

The one widening that can change a value, an integer column becoming DOUBLE, is made only when
every integer already in the column is exactly a double (:func:`alter_may_round` tells the
warehouse to check); else the load is refused.
"""

from __future__ import annotations

from typing import Any

from .names import literal

BIGINT = "BIGINT"
DOUBLE = "DOUBLE"
BOOLEAN = "BOOLEAN"
VARCHAR = "VARCHAR"
DATE = "DATE"
TIME = "TIME"
TIMESTAMP = "TIMESTAMP"
TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
JSON = "JSON"

# Integer types ordered by width: an existing narrower column (a table made by another loader)
# widens along this list.
_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", BIGINT, "HUGEINT")
_FLOATS = ("FLOAT", DOUBLE)
_SCALARS_AS_JSON = (BOOLEAN, *_INTEGERS, *_FLOATS)
_ALIASES = {
    "TIMESTAMPTZ": TIMESTAMPTZ,
    "INT8": BIGINT,
    "LONG": BIGINT,
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "REAL": "FLOAT",
    "FLOAT4": "FLOAT",
    "FLOAT8": DOUBLE,
    "BOOL": BOOLEAN,
    "STRING": VARCHAR,
    "TEXT": VARCHAR,
    "TIMESTAMP WITHOUT TIME ZONE": TIMESTAMP,
    "DATETIME": TIMESTAMP,
}


def canonical(type_name: str) -> str:
    """Return DuckDB's own spelling of a type, so types read back from the catalog compare equal."""
    upper = type_name.strip().upper()
    return _ALIASES.get(upper, upper)


def column_type(schema: Any) -> str:
    """Return the DuckDB type for one property's JSON Schema.

    ``["null", X]`` and ``anyOf``/``oneOf`` unions take the narrowest type that holds every branch;
    ``null`` alone gives VARCHAR; a property with no type at all (``{}``) may hold anything: JSON.
    """
    found: list[str] = []
    _collect(schema, found)
    if not found:
        return VARCHAR
    result = found[0]
    for other in found[1:]:
        result = union(result, other)
    return result


def _collect(schema: Any, found: list[str]) -> None:
    if not isinstance(schema, dict):
        found.append(JSON)
        return
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list):
        for branch in branches:
            _collect(branch, found)
        return
    declared = schema.get("type")
    if declared is None:
        if "format" in schema:
            declared = "string"
        else:
            found.append(JSON)
            return
    kinds = declared if isinstance(declared, list) else [declared]
    fmt = schema.get("format")
    for kind in kinds:
        if kind == "null":
            continue
        if kind == "integer":
            found.append(BIGINT)
        elif kind == "number":
            found.append(DOUBLE)
        elif kind == "boolean":
            found.append(BOOLEAN)
        elif kind == "string":
            found.append({"date-time": TIMESTAMPTZ, "date": DATE, "time": TIME}.get(fmt, VARCHAR))
        else:  # object, array, or a type name this loader does not know: keep the JSON as is
            found.append(JSON)


def holds(existing: str, wanted: str) -> bool:
    """True when a column of type ``existing`` can take the values of type ``wanted``.

    DOUBLE counts as holding integers: a ``number`` column is a double, and the integers it
    cannot hold exactly (beyond 2**53) are refused value by value when loading (:func:`read_spec`)
    and when widening (:func:`alter_may_round`), never rounded.
    """
    existing, wanted = canonical(existing), canonical(wanted)
    if existing == wanted or existing in (VARCHAR, JSON):
        return True
    if existing in _INTEGERS and wanted in _INTEGERS:
        return _INTEGERS.index(existing) >= _INTEGERS.index(wanted)
    if existing == DOUBLE and (wanted in _INTEGERS or wanted == "FLOAT"):
        return True
    return existing in (TIMESTAMPTZ, TIMESTAMP) and wanted in (DATE, TIMESTAMPTZ, TIMESTAMP)


def _join(a: str, b: str) -> str:
    """The narrowest of our types that holds both ``a`` and ``b`` (neither holds the other)."""
    if a in _INTEGERS and b in _INTEGERS:
        return max(a, b, key=_INTEGERS.index)
    if a in (*_INTEGERS, *_FLOATS) and b in (*_INTEGERS, *_FLOATS):
        return DOUBLE
    if {a, b} == {DATE, TIMESTAMPTZ}:
        return TIMESTAMPTZ
    if {a, b} == {DATE, TIMESTAMP}:
        return TIMESTAMP
    if JSON in (a, b) and {a, b} - {JSON} <= set(_SCALARS_AS_JSON):
        return JSON
    return VARCHAR


def union(a: str, b: str) -> str:
    """The type for a property that may be either ``a`` or ``b`` (order does not matter).

    JSON wins over VARCHAR: an object stays an object, and a string is kept as a JSON string.
    """
    a, b = canonical(a), canonical(b)
    if JSON in (a, b):
        return JSON
    if holds(a, b):
        return a
    if holds(b, a):
        return b
    return _join(a, b)


def widen(existing: str, wanted: str) -> str:
    """The type an existing column must have to take values of ``wanted``: never narrower.

    Every change this returns is a lossless ALTER (VARCHAR, the last resort, holds any value's
    text), except an integer type to DOUBLE, which is lossless only for the integers a double
    holds exactly: the warehouse checks the column's values first (:func:`alter_may_round`).
    """
    existing, wanted = canonical(existing), canonical(wanted)
    if holds(existing, wanted):
        return existing
    return _join(existing, wanted)


def alter_may_round(existing: str, new: str) -> bool:
    """True when ALTERing a column from ``existing`` to ``new`` can round a value: an integer
    type becoming a floating one. Such an ALTER is made only after checking every value."""
    return canonical(existing) in _INTEGERS and canonical(new) in _FLOATS


def read_spec(column: str, label: str) -> tuple[str, str]:
    """Return (type read_json parses the value as, SQL template turning ``{v}`` into the column).

    ``label`` names the stream and property in the one-line error a misfit value raises.
    """
    column = canonical(column)
    if column in (VARCHAR, JSON):
        return column, "{v}"

    def fail(what: str) -> str:
        return f"error({literal(label + ': ')} || {{v}}::VARCHAR || {literal(' ' + what)})"

    if column in _INTEGERS:
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL"
            " WHEN json_type({v}) IN ('UBIGINT', 'BIGINT')"
            f" THEN COALESCE(TRY_CAST({{v}} AS {column}), {fail(f'does not fit {column}')})"
            " WHEN json_type({v}) = 'DOUBLE' AND {v}::DOUBLE = trunc({v}::DOUBLE)"
            f" THEN COALESCE(TRY_CAST({{v}}::DOUBLE AS {column}), {fail(f'does not fit {column}')})"
            f" ELSE {fail('is not an integer')} END"
        )
        return JSON, expr
    if column in _FLOATS:
        # An integer is taken only when the float holds it exactly: 9007199254740993 would become
        # 9007199254740992, and two keys one.
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL"
            f" WHEN json_type({{v}}) = 'DOUBLE' THEN {{v}}::{column}"
            " WHEN json_type({v}) IN ('UBIGINT', 'BIGINT')"
            f" THEN CASE WHEN TRY_CAST({{v}}::{column} AS HUGEINT) = {{v}}::HUGEINT"
            f" THEN {{v}}::{column} ELSE"
            f" {fail(f'is an integer that a {column} cannot hold exactly (declare the property integer, or send it as a string)')}"
            f" END ELSE {fail('is not a number')} END"
        )
        return JSON, expr
    if column == BOOLEAN:
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL WHEN json_type({v}) = 'BOOLEAN'"
            f" THEN {{v}}::BOOLEAN ELSE {fail('is not a boolean')} END"
        )
        return JSON, expr
    if column == TIMESTAMPTZ:
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL ELSE COALESCE(TRY_CAST({v} AS TIMESTAMPTZ),"
            f" {fail('is not a date-time')}) END"
        )
        return VARCHAR, expr
    if column == TIMESTAMP:
        # Offsets are applied (the session time zone is UTC), never silently dropped.
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL ELSE COALESCE(TRY_CAST({v} AS TIMESTAMPTZ)::TIMESTAMP,"
            f" {fail('is not a date-time')}) END"
        )
        return VARCHAR, expr
    if column == DATE:
        # A date-time at midnight is a date; any other time of day would be cut off: refuse it.
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL WHEN TRY_CAST({v} AS TIMESTAMP) = TRY_CAST({v} AS DATE)"
            f" THEN TRY_CAST({{v}} AS DATE) ELSE {fail('is not a date')} END"
        )
        return VARCHAR, expr
    if column == TIME:
        # DuckDB's TIME cast drops a UTC offset: accept plain times only.
        expr = (
            "CASE WHEN {v} IS NULL THEN NULL"
            " WHEN regexp_full_match({v}, '[0-9]{1,2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?')"
            f" THEN COALESCE(TRY_CAST({{v}} AS TIME), {fail('is not a time')})"
            f" ELSE {fail('is not a time without offset')} END"
        )
        return VARCHAR, expr
    # A type this loader never creates (a table made by hand): let DuckDB cast, loudly.
    return VARCHAR, f"CASE WHEN {{v}} IS NULL THEN NULL ELSE CAST({{v}} AS {column}) END"
