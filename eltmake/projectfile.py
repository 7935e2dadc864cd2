"""Reading the project file: TOML with a parse cache, ``.env`` files, ``${VAR}`` interpolation,
environment overlays and the type checks every table uses.

Every problem is a :class:`~eltmake.errors.ConfigError` with one line naming the file and key.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from eltmake.errors import ConfigError, did_you_mean


def read_toml(file: Path, cache_dir: Path | None = None) -> tuple[dict[str, Any], bool]:
    """Parse the project file, and say whether it holds a ``${`` (whether it needs
    interpolation: a file without one skips a walk over every string).

    A large file is parsed once per content (pure-Python TOML parsing of 10,000 targets costs
    more than the no-op build itself). The parse cache is JSON, so reading it can never run code,
    and a damaged one is simply parsed again."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: not found; run `eltmake init` to create a project here, or pass -C DIR"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a folder, not a project file") from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
    if b"\0" in raw:
        raise ConfigError(f"{file}: is a binary file, not TOML text; is this the right folder?")
    has_vars = b"${" in raw
    if cache_dir is None or len(raw) < 32768:
        return _parse_toml(file, raw), has_vars
    import hashlib
    import json

    tag = hashlib.blake2b(raw, digest_size=16).hexdigest()
    cached = cache_dir / "project.json"
    try:
        data = json.loads(cached.read_bytes())
        if isinstance(data, dict) and data.get("tag") == tag and isinstance(data.get("data"), dict):
            return data["data"], has_vars
    except (OSError, ValueError):
        pass
    parsed = _parse_toml(file, raw)
    from eltmake.files import write_atomic

    write_atomic(cached, json.dumps({"tag": tag, "data": parsed}), best_effort=True)
    return parsed, has_vars


def _parse_toml(file: Path, raw: bytes) -> dict[str, Any]:
    import tomllib

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{file.name}:{line}: not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from None
    try:
        return _plain(tomllib.loads(text))
    except RecursionError:
        raise ConfigError(
            f"{file.name}: nested too deeply (arrays or tables inside one another hundreds of "
            "levels deep); flatten it"
        ) from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)$", msg)
        if m:
            msg = msg[: m.start()].strip()
            raise ConfigError(
                f"{file.name}:{m.group(1)}:{m.group(2)}: invalid TOML: {msg}"
            ) from None
        raise ConfigError(f"{file.name}: invalid TOML: {msg}") from None


def _plain(value: Any) -> Any:
    """TOML's unquoted dates (start_date = 2024-01-01T00:00:00Z) as ISO 8601 strings, which is
    what taps and dbt vars expect (and what Meltano's YAML gives them); plain JSON data after."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.date | _dt.time):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return value


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments, ``export`` prefixes and quotes as in other dotenv tools."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path.name}: cannot read: {e}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path.name}:{n}: expected KEY=value, got {line[:40]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str], fname: str, path: tuple[str, ...] = ()) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$${`` stands for ``${``."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(m: re.Match) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{fname}: {'.'.join(path)}: ${{{name}}} is not set; export {name}=... "
                f"or add it to .env (or write ${{{name}:-default}})"
            )

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, fname, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, fname, (*path, str(i))) for i, v in enumerate(value)]
    return value


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    dict: "a table",
    bool: "true or false",
    int: "an integer",
    float: "a number",
}


def type_names(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def check_type(value: Any, types: tuple[type, ...], where: str) -> None:
    """Refuse a value of the wrong type (``bool`` is not an ``int`` here, unlike in Python)."""
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)
    if not ok:
        got = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise ConfigError(f"{where} must be {type_names(types)}, not {got} ({value!r:.40})")


def check_keys(
    table: dict[str, Any], spec: dict[str, tuple[type, ...]], fname: str, where: str
) -> None:
    for key, value in table.items():
        if key not in spec:
            hint = did_you_mean(key, spec) or f"; allowed: {', '.join(sorted(spec))}"
            raise ConfigError(f"{fname}: {where}: unknown key {key!r}{hint}")
        check_type(value, spec[key], f"{fname}: {where}.{key}")


def check_str_list(value: Any, fname: str, table: str, key: str) -> None:
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{fname}: {table}.{key}[{i}] must be a string, not {item!r:.40}")
