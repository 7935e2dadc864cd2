"""Valid JSON this loader cannot represent, told apart from input that is not JSON at all.

orjson, which parses every message, refuses some valid JSON and silently changes some more:

* a number beyond a 64-bit float (``1e400``) and a lone surrogate escape (``"\\ud800"``) are
  refused, with the same exception as a syntax error;
* nesting deeper than :data:`MAX_READ_DEPTH` levels is refused when reading, and deeper than
  :data:`MAX_WRITE_DEPTH` when writing a record or STATE back out (and DuckDB's JSON reader loads
  a record at most :data:`MAX_RECORD_DEPTH` levels deep);
* an integer outside ``-2**63 .. 2**64 - 1`` is read as a float: 18446744073709551617 becomes
  1.8446744073709552e+19, a different number.

:func:`explain` runs only after orjson refused a line: it reads the line again with a strict JSON
scanner of its own (iterative, so any depth is fine) and says either that the line is not JSON, or
what in it cannot be represented. :func:`wide_integer` finds an integer orjson turned into a float.
Every answer is one line that names the input line, for an exit code 2 error.
"""

from __future__ import annotations

import json
import math
import re
from json.decoder import scanstring
from typing import Any

MAX_READ_DEPTH = 1024  # orjson.loads refuses deeper nesting
MAX_WRITE_DEPTH = 254  # orjson.dumps refuses a deeper value (an object or array counts as 1)
MAX_RECORD_DEPTH = 127  # DuckDB's read_json refuses a deeper record (the record object counts)
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**64 - 1  # what orjson reads as an int, exactly

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CLOSE = {"{": "}", "[": "]"}
_TOO_DEEP = "too deep"


class _NotJSON(ValueError):
    pass


def _shown(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _integer_problem(literal: str) -> str:
    return (
        f"integer {_shown(literal)} is out of range (valid JSON, but this loader holds integers"
        " exactly only from -2^63 to 2^64-1; send it as a string)"
    )


def _number_problem(literal: str) -> str:
    return (
        f"number {_shown(literal)} is out of range (valid JSON, but beyond what a 64-bit float"
        " holds; send it as a string)"
    )


def _surrogate_problem(value: str, lone: str) -> str:
    return (
        f"string {_shown(json.dumps(value))} holds a lone surrogate \\u{ord(lone):04x}"
        " (valid JSON, but half of a UTF-16 pair, not a character, so it cannot be stored as"
        " text; fix the string at the source)"
    )


def _depth_problem(depth: int) -> str:
    return (
        f"JSON nested {depth} levels deep (valid JSON, but this loader reads at most"
        f" {MAX_READ_DEPTH} levels, and stores a record at most {MAX_RECORD_DEPTH} deep; flatten"
        " it or send the deep value as a JSON string)"
    )


def _scan(text: str) -> str | None:
    """Check that ``text`` is exactly one JSON value; return the first thing in it (in text order)
    that this loader cannot represent, or None. Raises _NotJSON when it is not valid JSON.

    Iterative (an explicit stack), so a line nested a million levels deep is read without recursion.
    """
    stack: list[str] = []  # the closing bracket of each open container
    problem: str | None = None
    deepest = 0
    end = len(text)
    pos = _WS.match(text, 0).end()
    while True:
        # A value starts at pos.
        char = text[pos : pos + 1]
        if char in _CLOSE:
            stack.append(_CLOSE[char])
            deepest = max(deepest, len(stack))
            if deepest > MAX_READ_DEPTH and problem is None:
                problem = _TOO_DEEP  # worded at the end, when the full depth is known
            pos = _WS.match(text, pos + 1).end()
            if text.startswith(stack[-1], pos):  # {} or []
                stack.pop()
                pos += 1
            else:
                if stack[-1] == "}":
                    pos = _key(text, pos)
                continue
        elif char == '"':
            try:
                value, pos = scanstring(text, pos + 1, True)
            except ValueError:
                raise _NotJSON from None
            if problem is None and (lone := _SURROGATE.search(value)):
                problem = _surrogate_problem(value, lone.group())
        elif number := _NUMBER.match(text, pos):
            literal = number.group()
            pos = number.end()
            if problem is None:
                if number.group(1) is None and number.group(2) is None:
                    if not MIN_INTEGER <= int(literal) <= MAX_INTEGER:
                        problem = _integer_problem(literal)
                elif math.isinf(float(literal)):
                    problem = _number_problem(literal)
        else:
            for word in ("true", "false", "null"):
                if text.startswith(word, pos):
                    pos += len(word)
                    break
            else:
                raise _NotJSON
        # A value ended at pos: close containers, or go on to the next member.
        while True:
            pos = _WS.match(text, pos).end()
            if not stack:
                if pos != end:
                    raise _NotJSON
                return _depth_problem(deepest) if problem is _TOO_DEEP else problem
            char = text[pos : pos + 1]
            if char == stack[-1]:
                stack.pop()
                pos += 1
            elif char == ",":
                pos = _WS.match(text, pos + 1).end()
                if stack[-1] == "}":
                    pos = _key(text, pos)
                break
            else:
                raise _NotJSON


def _key(text: str, pos: int) -> int:
    """Read ``"key" :`` at pos; return where the member's value starts."""
    if not text.startswith('"', pos):
        raise _NotJSON
    try:
        _, pos = scanstring(text, pos + 1, True)
    except ValueError:
        raise _NotJSON from None
    pos = _WS.match(text, pos).end()
    if not text.startswith(":", pos):
        raise _NotJSON
    return _WS.match(text, pos + 1).end()


def explain(lineno: int, line: bytes, error: Exception) -> str:
    """The one-line error for a line orjson refused (with ``error``): not JSON, or JSON that it
    cannot represent."""
    shown = line[:80].decode("utf-8", "replace").rstrip()
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"line {lineno}: not valid JSON (byte {exc.start + 1} is not UTF-8): {shown!r}"
    try:
        problem = _scan(text)
    except _NotJSON:
        return f"line {lineno}: not valid JSON: {shown!r}"
    if problem is None:  # valid, and nothing found that orjson should refuse: say what it said
        return f"line {lineno}: cannot be read ({error}): {shown!r}"
    return f"line {lineno}: {problem}"


class _WideInteger(Exception):
    pass


def _exact_int(literal: str) -> int:
    value = int(literal)
    if not MIN_INTEGER <= value <= MAX_INTEGER:
        raise _WideInteger(literal)
    return value


_PLUS, _E = ord("+"), ord("e")


def has_exponent(data: bytes) -> bool:
    """True when ``data`` (orjson output) holds ``e+``, as every float of 1e16 or more is written.

    An integer orjson read as a float is at least 2**63, so a record without ``e+`` has none. The
    caller tests ``43 in data`` first (one memchr); this walks the few ``+`` a record may hold,
    which is faster than searching for two bytes on a long record.
    """
    plus = data.find(_PLUS)
    while plus > 0:
        if data[plus - 1] == _E:
            return True
        plus = data.find(_PLUS, plus + 1)
    return False


def wide_integer(lineno: int, line: bytes) -> str | None:
    """The one-line error for an integer orjson read as a float, or None when there is none.

    Called only for a line whose re-serialised record or STATE holds a float with a positive
    exponent (:func:`has_exponent`), so the common line never pays for this second parse.
    """
    try:
        json.loads(line, parse_int=_exact_int)
    except _WideInteger as exc:
        return f"line {lineno}: {_integer_problem(str(exc))}"
    except RecursionError:  # deeper than the json module goes (it recurses): scan it instead
        problem = _scan(line.decode("utf-8"))
        return f"line {lineno}: {problem}" if problem is not None else None
    return None


def nesting_depth(value: Any) -> int:
    """How many levels of objects and arrays ``value`` has (a scalar: 0), without recursion."""
    deepest = 0
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in item)
    return deepest


def too_deep(lineno: int, what: str, value: Any, limit: int = MAX_RECORD_DEPTH) -> str:
    """The one-line error for a record (or STATE) nested deeper than can be stored (printed)."""
    done = "stores a record" if limit == MAX_RECORD_DEPTH else "prints a STATE value"
    return (
        f"line {lineno}: {what} is nested {nesting_depth(value)} levels deep (valid JSON, but this"
        f" loader {done} at most {limit} levels deep; flatten it or send the deep value as a"
        " JSON string)"
    )
