"""Constructive traces with early cutoff: step keys, output fingerprints and their records.

A step's key is the digest of its *parts*: its kind, its definition (one digest per key, so a
change can be named), the content of its inputs, the output fingerprints of its upstream steps and
the cache format. Because downstream keys hold upstream *fingerprints* (what a step produced) and
not upstream keys, a step that re-runs and produces the same output leaves its dependents skipped.

Records live in diskcache under ``.eltmake/cache``. A stat cache (size, mtime, inode, ctime) maps
each file to its digest so that a no-op build reads no unchanged file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.project import parse_freshness

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.step import Step

# Bump only when keys really change meaning: upgrading eltmake must not force a full rebuild.
FORMAT_VERSION = 1
MISSING = "missing"
# Files modified this recently are hashed again next time: their mtime may not yet tell a later
# write in the same clock tick apart ("racy git").
RACY_S = 2.0
# Keys of a target table that describe it without changing what it does.
NOT_IN_KEY = {"deps", "description", "freshness", "locks"}
_GLOB_CHARS = set("*?[")
_ESCAPED = set('"\\')


def digest(data: Any) -> str:
    """A short stable digest of JSON-able data (keys sorted) or bytes."""
    if isinstance(data, str) and data.isascii() and data.isprintable() and not _ESCAPED & set(data):
        data = b'"' + data.encode() + b'"'  # what json.dumps gives, without the encoder's cost
    elif not isinstance(data, bytes):
        # json, not orjson: importing orjson costs more start-up than it saves on small dicts.
        data = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Cache:
    def __init__(self, state_dir: Path):
        import diskcache

        self.dir = state_dir / "cache"
        self.dc = diskcache.Cache(str(self.dir), eviction_policy="none", size_limit=2**40)
        self._stats: dict[str, Any] = {}

    def close(self) -> None:
        self.dc.close()

    # --- records -------------------------------------------------------------------------------

    def record(self, name: str) -> dict[str, Any] | None:
        return self.dc.get("rec:" + name)

    def put_record(self, name: str, rec: dict[str, Any]) -> None:
        self.dc.set("rec:" + name, rec)

    def forget(self, name: str) -> bool:
        return self.dc.delete("rec:" + name)

    def names(self) -> list[str]:
        return sorted(
            k[4:] for k in self.dc.iterkeys() if isinstance(k, str) and k.startswith("rec:")
        )

    # --- files ---------------------------------------------------------------------------------

    def file_digest(
        self, root: Path, rel: str, known: dict[str, list] | None = None
    ) -> tuple[str, tuple | None]:
        """The content digest of a file and the stat it was taken at (``MISSING`` if absent).

        ``known`` maps paths to ``[*stat, digest]`` as a step's record holds them: a file whose
        stat is unchanged since that run costs no cache lookup at all."""
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return MISSING, None
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if known is not None:
            seen = known.get(rel)
            if seen is not None and tuple(seen[:4]) == sig:
                return seen[4], sig
        key = "stat:" + rel
        hit = self.dc.get(key)
        if hit is not None and tuple(hit[0]) == sig:
            return hit[1], sig
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        d = h.hexdigest()
        if time.time() - st.st_mtime_ns / 1e9 > RACY_S:
            self.dc.set(key, (sig, d))
        return d, sig

    def expand(self, root: Path, patterns: list[str]) -> list[str]:
        """Input patterns → sorted relative file paths; a literal path is kept even if missing."""
        out: set[str] = set()
        for pat in patterns:
            if _GLOB_CHARS.isdisjoint(pat):
                out.add(os.path.normpath(pat))
                continue
            for p in glob.glob(pat, root_dir=root, recursive=True):
                if os.path.isfile(os.path.join(root, p)):
                    out.add(os.path.normpath(p))
        return sorted(out)


def step_parts(
    project: Project,
    step: Step,
    cache: Cache,
    upstream: dict[str, str],
    rec: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple | None]]:
    """The parts of a step's key, and the stat of each input file when it was read."""
    pm = project.pm
    definition = {k: digest(v) for k, v in step.target.config.items() if k not in NOT_IN_KEY}
    for extra in pm.hook.eltmake_step_definition(project=project, step=step):
        for k, v in (extra or {}).items():
            definition[k] = digest(v)
    patterns = list(step.inputs)
    for extra in pm.hook.eltmake_step_inputs(project=project, step=step):
        patterns.extend(extra or [])
    inputs: dict[str, str] = {}
    stats: dict[str, tuple | None] = {}
    known = rec.get("input_stats") if rec else None
    for rel in cache.expand(project.root, patterns):
        inputs[rel], stats[rel] = cache.file_digest(project.root, rel, known)
    parts = {
        "format": FORMAT_VERSION,
        "kind": step.kind,
        "definition": definition,
        "inputs": inputs,
        "upstream": upstream,
    }
    return parts, stats


def input_stats(parts: dict[str, Any], stats: dict[str, tuple | None]) -> dict[str, list]:
    """{input: [*stat, digest]} for a record, so the next decision needs no stat-cache lookup."""
    return {
        rel: [*sig, parts["inputs"][rel]]
        for rel, sig in stats.items()
        if sig is not None and time.time() - sig[1] / 1e9 > RACY_S
    }


def key_of(parts: dict[str, Any]) -> str:
    return digest(parts)


def explain(parts: dict[str, Any], rec: dict[str, Any] | None) -> list[str]:
    """Why a key differs from the recorded one, in words, most useful first."""
    if rec is None:
        return ["never built"]
    old = rec.get("parts") or {}
    if old.get("format") != parts["format"]:
        return ["cache format changed"]
    if old.get("kind") != parts["kind"]:
        return [f"kind changed: {old.get('kind')} → {parts['kind']}"]
    reasons = []
    for side, label in (("inputs", "input"), ("definition", "definition")):
        a, b = old.get(side, {}), parts[side]
        for k in sorted(set(a) | set(b)):
            if k not in a:
                reasons.append(f"new {label}: {k}")
            elif k not in b:
                reasons.append(f"{label} removed: {k}")
            elif a[k] != b[k]:
                if side == "inputs" and b[k] == MISSING:
                    reasons.append(f"input missing: {k}")
                else:
                    reasons.append(f"{label} changed: {k}")
    a, b = old.get("upstream", {}), parts["upstream"]
    for k in sorted(set(a) | set(b)):
        if k not in a:
            reasons.append(f"new upstream: {k}")
        elif k not in b:
            reasons.append(f"upstream removed: {k}")
        elif a[k] != b[k]:
            reasons.append(f"upstream {k} delivered new data")
    return reasons or ["key changed"]


def freshness_reason(freshness: str | None, rec: dict[str, Any], now: float) -> str | None:
    """A reason to re-run an up-to-date step because of its ``freshness``, or ``None``."""
    if not freshness or freshness == "never":
        return None
    if freshness == "always":
        return "freshness always"
    age = now - rec.get("time", 0)
    if age > parse_freshness(freshness):
        return f"older than freshness {freshness}"
    return None


def outputs_reason(project: Project, cache: Cache, step: Step, rec: dict[str, Any]) -> str | None:
    """Whether the declared outputs are still what the step wrote (Make: a deleted output re-runs)."""
    recorded = rec.get("outputs", {})
    for rel in step.outputs:
        path = os.path.join(project.root, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"output missing: {rel}"
        old = recorded.get(rel)
        if old is None:
            return f"output not recorded: {rel}"
        if (st.st_size, st.st_mtime_ns) != tuple(old[:2]):
            d, _ = cache.file_digest(project.root, rel) if os.path.isfile(path) else (old[2], None)
            if d != old[2]:
                return f"output changed: {rel}"
    for reason in project.pm.hook.eltmake_check_outputs(project=project, step=step, record=rec):
        if reason:
            return reason
    return None


def output_snapshot(project: Project, cache: Cache, step: Step) -> dict[str, list]:
    """{output: [size, mtime_ns, digest]} after a run; a folder output is stat-only."""
    out: dict[str, list] = {}
    for rel in step.outputs:
        path = os.path.join(project.root, rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if os.path.isfile(path):
            d, _ = cache.file_digest(project.root, rel)
        else:
            d = digest([st.st_size, st.st_mtime_ns])
        out[rel] = [st.st_size, st.st_mtime_ns, d]
    return out


def inputs_changed_since(project: Project, stats: dict[str, tuple | None]) -> str | None:
    """The first input whose stat moved while the step ran, or ``None``."""
    for rel, sig in stats.items():
        try:
            st = os.stat(os.path.join(project.root, rel))
            now = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        except FileNotFoundError:
            now = None
        if now != sig:
            return rel
    return None
