"""A tap's capabilities and catalog: ``--about``, ``--discover`` (cached), and selection.

* Capabilities come from the extractor's ``capabilities`` when given, else from the tap's
  ``--about --format json`` (Singer SDK taps), else a classic tap is assumed
  (``catalog``, ``discover``, ``state``). The answer is cached per installed tool version.
* The catalog comes from ``--discover`` and is cached under ``.eltmake/singer/catalogs/``, keyed
  by the digest of the resolved config (secrets included, as a digest) and the tool's identity, so
  a changed setting or an upgraded tap discovers again and a no-op build does not pay for it. A
  tap whose schema depends on its data (tap-jsonl samples its files) discovers again with
  ``--full-refresh`` or ``eltmake select NAME --list --refresh``. The catalog reaches the tap
  with ``--catalog``, or ``--properties`` for taps that declare that capability.
* Selection follows Meltano: patterns ``STREAM.PROPERTY`` with shell wildcards (``*``, ``?``,
  ``[ab]``), ``!`` to exclude, nested properties as ``STREAM.a.b``; every rule that includes is
  applied before every rule that excludes, so an exclusion beats an inclusion. A pattern without
  a property (``orders``) selects the stream with only its automatic properties, as in Meltano;
  write ``orders.*`` for all of them. ``!orders`` and ``!orders.*`` deselect the stream. The
  default selection is ``*.*``. The result is written as ``selected`` metadata; properties with
  ``inclusion: automatic`` are always selected and ``unsupported`` ones never are.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import ConfigError, Redactor, StepError, write_atomic
from eltmake_singer.config import DEFAULT_SELECT, ToolConfig, digest

if TYPE_CHECKING:
    from eltmake.api import Project

CLASSIC_CAPABILITIES = ["catalog", "discover", "state"]
TAIL = 20

Spawn = Callable[..., subprocess.Popen]


# --- selection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectPattern:
    stream: str
    prop: tuple[str, ...] | None  # property path, None for a pattern on the stream alone
    negated: bool
    raw: str


def parse_pattern(pattern: str, where: str = "select") -> SelectPattern:
    """``"!orders.note"`` → SelectPattern("orders", ("note",), negated=True)."""
    raw = pattern
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    stream, dot, prop = body.partition(".")
    parts = tuple(prop.split(".")) if dot else None
    if not stream or (parts is not None and not all(parts)):
        raise ConfigError(
            f"{where}: {raw!r} is not a selection pattern; write STREAM.PROPERTY "
            '(wildcards allowed, e.g. "orders.*"), with "!" in front to exclude'
        )
    return SelectPattern(stream, parts, negated, raw)


def _stream_id(entry: dict[str, Any]) -> str:
    return str(entry.get("tap_stream_id") or entry.get("stream") or "")


def _property_paths(schema: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every property path of a JSON schema, parents before children."""
    out: list[tuple[str, ...]] = []
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict):
        for name, sub in props.items():
            path = (*prefix, name)
            out.append(path)
            out += _property_paths(sub, path)
    return out


def _breadcrumb(path: tuple[str, ...]) -> list[str]:
    crumb: list[str] = []
    for name in path:
        crumb += ["properties", name]
    return crumb


def _path_of(crumb: list[str]) -> tuple[str, ...] | None:
    if len(crumb) % 2 or any(c != "properties" for c in crumb[0::2]):
        return None
    return tuple(crumb[1::2])


def _matches(rule: SelectPattern, stream: str, path: tuple[str, ...] | None) -> bool:
    if not fnmatchcase(stream, rule.stream):
        return False
    if path is None:  # the stream itself
        return rule.prop is None or (rule.negated and rule.prop == ("*",)) or not rule.negated
    if rule.prop is None or len(rule.prop) != len(path):
        return False
    return all(fnmatchcase(p, r) for p, r in zip(path, rule.prop, strict=True))


def apply_selection(catalog: dict[str, Any], patterns: list[str] | None) -> dict[str, Any]:
    """A copy of ``catalog`` with ``selected`` metadata set from ``patterns`` (Meltano rules)."""
    rules = [parse_pattern(p) for p in (DEFAULT_SELECT if patterns is None else patterns)]
    ordered = [r for r in rules if not r.negated] + [r for r in rules if r.negated]
    out = copy.deepcopy(catalog)
    for entry in out.get("streams", []):
        if not isinstance(entry, dict):
            continue
        sid = _stream_id(entry)
        metadata = entry.setdefault("metadata", [])
        by_path: dict[tuple[str, ...] | None, dict[str, Any]] = {}
        for item in metadata:
            if isinstance(item, dict) and isinstance(item.get("breadcrumb"), list):
                crumb = item["breadcrumb"]
                key = None if not crumb else _path_of(crumb)
                if key is not None or not crumb:
                    item.setdefault("metadata", {})
                    by_path[key] = item
        for path in [None, *_property_paths(entry.get("schema", {}))]:
            if path not in by_path:
                item = {"breadcrumb": [] if path is None else _breadcrumb(path), "metadata": {}}
                metadata.append(item)
                by_path[path] = item
        decided: dict[tuple[str, ...] | None, bool] = {}
        for path in sorted(by_path, key=lambda p: -1 if p is None else len(p)):
            # A nested property not named by any rule follows its parent.
            parent = None if path is None or len(path) == 1 else path[:-1]
            value = False if path is None else decided.get(parent, False) and len(path) > 1
            for rule in ordered:
                if _matches(rule, sid, path):
                    value = not rule.negated
            meta = by_path[path]["metadata"]
            inclusion = meta.get("inclusion")
            if path is not None and inclusion == "automatic":
                value = decided.get(None, False) or value
            if inclusion == "unsupported":
                value = False
            decided[path] = value
            meta["selected"] = value
    return out


def selection_rows(selected: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(stream, property path or "", status) for ``eltmake select --list``; status is one of
    selected, excluded, automatic, unsupported."""
    rows: list[tuple[str, str, str]] = []
    for entry in selected.get("streams", []):
        sid = _stream_id(entry)
        items = sorted(
            (i for i in entry.get("metadata", []) if isinstance(i, dict)),
            key=lambda i: (len(i.get("breadcrumb", [])), i.get("breadcrumb", [])),
        )
        for item in items:
            crumb = item.get("breadcrumb", [])
            path = _path_of(crumb) if crumb else ()
            if path is None:
                continue
            meta = item.get("metadata", {})
            if meta.get("inclusion") == "unsupported":
                status = "unsupported"
            elif meta.get("inclusion") == "automatic" and meta.get("selected"):
                status = "automatic"
            else:
                status = "selected" if meta.get("selected") else "excluded"
            rows.append((sid, ".".join(path), status))
    return rows


def selected_streams(selected: dict[str, Any]) -> list[str]:
    return [
        _stream_id(e)
        for e in selected.get("streams", [])
        for i in e.get("metadata", [])
        if isinstance(i, dict)
        and i.get("breadcrumb") == []
        and i.get("metadata", {}).get("selected")
    ]


# --- running the tap for --about and --discover -------------------------------------------------


def run_capture(
    spawn: Spawn,
    argv: list[str],
    t: ToolConfig,
    what: str,
    redactor: Redactor,
    timeout: float | None,
) -> bytes:
    """Run ``argv``, return its stdout; a failure is a StepError with the tool's last lines."""
    proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise StepError(f"{t.name} {what}: no answer after {timeout:g}s (timeout)") from None
    if proc.returncode != 0:
        lines = [redactor(x) for x in err.decode("utf-8", "replace").splitlines() if x.strip()]
        last = lines[-1] if lines else "(no output on stderr)"
        raise StepError(
            f"{t.name} {what} failed with exit code {proc.returncode}: {last}", tail=lines[-TAIL:]
        )
    return out


def _cache_dir(project: Project, kind: str) -> Path:
    path = project.state_dir / "singer" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value), mode=0o600)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def capabilities(
    project: Project,
    t: ToolConfig,
    exe: str,
    identity: dict[str, Any],
    spawn: Spawn,
    log: Callable[[str], None],
) -> list[str]:
    """The tap's capabilities: the extractor's override, its cached ``--about``, or a guess."""
    if t.capabilities is not None:
        return list(t.capabilities)
    path = _cache_dir(project, "about") / f"{t.name}-{digest(identity)[:16]}.json"
    cached = _read_json(path)
    if cached is None:
        proc = spawn(
            [exe, "--about", "--format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, _ = proc.communicate(timeout=120)
            about = json.loads(out) if proc.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.communicate()
            about = None
        caps = about.get("capabilities") if isinstance(about, dict) else None
        cached = {"capabilities": caps if isinstance(caps, list) else None}
        _write_json(path, cached)
    if cached.get("capabilities") is None:
        log(
            f"{t.name} does not answer --about; assuming a classic tap with capabilities "
            f"{', '.join(CLASSIC_CAPABILITIES)} (set extractors.{t.name}.capabilities to say)"
        )
        return list(CLASSIC_CAPABILITIES)
    return [str(c) for c in cached["capabilities"]]


def discover(
    project: Project,
    t: ToolConfig,
    exe: str,
    config_path: Path,
    cache_key: Any,
    spawn: Spawn,
    redactor: Redactor,
    refresh: bool = False,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The tap's catalog from ``--discover``, cached by ``cache_key`` (config and tool digests)."""
    path = _cache_dir(project, "catalogs") / f"{t.name}-{digest(cache_key)[:16]}.json"
    if not refresh:
        cached = _read_json(path)
        if isinstance(cached, dict):
            return cached
    out = run_capture(
        spawn, [exe, "--config", str(config_path), "--discover"], t, "--discover", redactor, timeout
    )
    try:
        catalog = json.loads(out)
    except ValueError as e:
        raise StepError(f"{t.name} --discover wrote something that is not JSON: {e}") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("streams"), list):
        raise StepError(f"{t.name} --discover wrote JSON without a 'streams' list: not a catalog")
    _write_json(path, catalog)
    return catalog
