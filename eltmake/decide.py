"""The one module that decides: step keys, the reasons a step runs, freshness, fingerprints, and
the record written after a step (also by ``touch``).

A step's key is the digest of its *parts*: its kind, its definition (one digest per key, so a
change can be named), the content of its inputs, the output fingerprints of its upstream steps and
the cache format. Because downstream keys hold upstream *fingerprints* (what a step produced) and
not upstream keys, a step that re-runs and produces the same output leaves its dependents skipped
(early cutoff). A key that matches its record is still not enough: the declared outputs and what
the recipe checks (a warehouse table) must still stand, and ``freshness`` must not have expired.

Records are read in one go when a build starts (one round trip to the store, however many
targets) and written one by one as steps finish.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from eltmake.cache import MISSING, RACY_S
from eltmake.digest import digest
from eltmake.project import parse_freshness

if TYPE_CHECKING:
    from eltmake.cache import Cache
    from eltmake.project import Project
    from eltmake.step import Step, StepResult

# Bump only when keys really change meaning: upgrading eltmake must not force a full rebuild.
FORMAT_VERSION = 1
# Keys of a target table that describe it without changing what it does.
NOT_IN_KEY = {"deps", "description", "freshness", "locks"}


class Records(Protocol):
    """Where records live (the store): all of one scope at once, and one at a time."""

    def records(self, scope: str) -> dict[str, dict[str, Any]]: ...
    def put_record(self, scope: str, name: str, record: dict[str, Any]) -> None: ...


@dataclass
class Decision:
    """What to do with one target, and why (the reason is shown by ``-n``, ``status`` and the
    build's output)."""

    status: str  # "run" | "skipped" | "would_run" | "built" (an aggregate whose deps ran)
    reason: str
    fingerprint: str | None = None  # known now for a skip; after the run for a step that runs
    key: str = ""
    parts: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, tuple | None] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    changed_inputs: list[str] | None = None


class Decider:
    """Decides every target of one build against the records of the project's scope (its
    ``--env``: environments never share records)."""

    def __init__(
        self,
        project: Project,
        cache: Cache,
        store: Records | None,
        *,
        force: set[str] | None = None,
        force_all: bool = False,
        full_refresh: bool = False,
        dry_run: bool = False,
        edited: set[str] | None = None,
    ):
        self.project = project
        self.cache = cache
        self.store = store
        self.scope = project.env_name or ""
        self.force = force or set()
        self.force_all = force_all
        self.full_refresh = full_refresh
        self.dry_run = dry_run
        # In a watch cycle after the first: the steps the edit affects. The others are not
        # re-run for freshness "always" (every save would re-extract every API); a duration
        # freshness still expires (the watch starts a cycle when it does).
        self.edited = edited
        self.restored: list[str] = []  # outputs of the step being decided, put back from the store
        self.records: dict[str, dict[str, Any]] = store.records(self.scope) if store else {}

    # --- deciding ----------------------------------------------------------------------------

    def aggregate(
        self, preds: list[str], fingerprints: dict[str, str | None], ran: list[str]
    ) -> Decision:
        """A target without a recipe: it "ran" when a dependency ran; its fingerprint is theirs."""
        fps = {p: fingerprints.get(p) for p in preds}
        fp = None if None in fps.values() else digest(fps)
        if not ran:
            return Decision("skipped", "up to date", fp)
        if self.dry_run:
            more = f" (and {len(ran) - 1} more)" if len(ran) > 1 else ""
            return Decision("would_run", f"dependency {ran[0]} would run{more}", fp)
        return Decision("built", f"aggregate: {len(ran)} of {len(preds)} deps ran", fp)

    def step(self, step: Step, upstream: dict[str, str | None]) -> Decision:
        """Skip the step (with its recorded fingerprint) or run it (with the reason)."""
        unknown = [p for p, fp in upstream.items() if fp is None]
        if unknown:  # dry run: the upstream would run first, its output is unknown
            more = f" (or {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            return Decision("would_run", f"if upstream {unknown[0]}{more} delivers new data")
        name = step.name
        rec = self.records.get(name)
        parts, stats = self.parts(step, upstream, rec)  # type: ignore[arg-type]
        key = key_of(parts)
        if self.force_all:
            reason = "forced (-B)"
        elif name in self.force:
            reason = f"forced (--force {name})"
        elif rec is None or rec.get("key") != key:
            reason = "; ".join(explain(parts, rec)[:3])
        elif self.full_refresh:
            reason = "full refresh"
        else:
            freshness = step.freshness
            if freshness == "always" and self.edited is not None and name not in self.edited:
                freshness = None  # a watch cycle: "always" held when the watch started
            reason = self.outputs_reason(step, rec) or freshness_reason(freshness, rec, time.time())
        if reason is None:
            assert rec is not None
            why = "up to date"
            if self.restored:
                why = f"up to date; restored {', '.join(self.restored)} from the store"
                self.restored = []
            return Decision("skipped", why, rec["fingerprint"], key, parts, stats, rec)
        status = "would_run" if self.dry_run else "run"
        changed = None if status == "would_run" else self._changed_inputs(name, parts, rec)
        return Decision(status, reason, None, key, parts, stats, rec, changed)

    def parts(
        self, step: Step, upstream: dict[str, str], rec: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, tuple | None]]:
        """The parts of a step's key, and the stat of each input file when it was read."""
        recipe = self.project.recipes[step.kind]
        definition = definition_digests(self.project, step)
        patterns = list(step.inputs) + list(recipe.inputs(self.project, step) or [])
        inputs: dict[str, str] = {}
        stats: dict[str, tuple | None] = {}
        known = rec.get("input_stats") if rec else None
        root = self.project.root
        for rel in self.cache.expand(root, patterns):
            inputs[rel], stats[rel] = self.cache.file_digest(root, rel, known)
        parts = {
            "format": FORMAT_VERSION,
            "kind": step.kind,
            "definition": definition,
            "inputs": inputs,
            "upstream": upstream,
        }
        return parts, stats

    def _changed_inputs(
        self, name: str, parts: dict[str, Any], rec: dict[str, Any] | None
    ) -> list[str] | None:
        """For :attr:`StepContext.changed_inputs`: which inputs moved, if only inputs did."""
        if rec is None or self.full_refresh or self.force_all or name in self.force:
            return None
        old = recorded_parts(rec)
        if any(old.get(k) != parts[k] for k in ("format", "kind", "definition", "upstream")):
            return None
        a, b = old.get("inputs", {}), parts["inputs"]
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return changed or None

    def outputs_reason(self, step: Step, rec: dict[str, Any]) -> str | None:
        """Whether the declared outputs are still what the step wrote (Make: a deleted output
        re-runs), then whether the recipe's own outputs stand (a warehouse table)."""
        recorded = rec.get("outputs", {})
        root = self.project.root
        for rel in step.outputs:
            path = os.path.join(root, rel)
            old = recorded.get(rel)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if old is None or not self._restore(rel, old[2]):
                    return f"output missing: {rel}"
                continue
            if old is None:
                return f"output not recorded: {rel}"
            folder = not os.path.isfile(path)
            if folder or (st.st_size, st.st_mtime_ns) != tuple(old[:2]):
                d, _ = self.cache.file_digest(root, rel)
                if d != old[2] and (folder or not self._restore(rel, old[2])):
                    return f"output changed: {rel}"
        recipe = self.project.recipes[step.kind]
        return recipe.check_outputs(self.project, step, rec) or None

    def _restore(self, rel: str, digest_: str) -> bool:
        """Put back a declared output from the shared store's artifacts (another runner built
        it): a download whose content is not the recorded digest is thrown away."""
        store = self.store
        if self.dry_run or store is None or not getattr(store, "shares_artifacts", False):
            return False
        from eltmake.digest import file_digest

        path = self.project.root / rel
        try:
            if not store.get_artifact(digest_, path):
                return False
        except Exception:  # an unreachable artifact costs a re-run, never a wrong file
            return False
        if file_digest(str(path)) != digest_:
            path.unlink(missing_ok=True)
            return False
        self.restored.append(rel)
        return True

    # --- recording -----------------------------------------------------------------------------

    def finished(
        self, step: Step, decision: Decision, result: StepResult, duration: float
    ) -> tuple[str, str]:
        """Record a successful run; return (the step's fingerprint, a warning or "").

        The fingerprint is what the recipe reported, else the digest of the declared outputs,
        else the key. Nothing is recorded when an input changed while the step ran: the next
        build runs it again."""
        outputs = self.output_snapshot(step)
        fp = result.fingerprint
        if fp is None:
            fp = digest({k: v[2] for k, v in outputs.items()}) if step.outputs else decision.key
        self._share(outputs)
        changed = inputs_changed_since(self.project, decision.stats)
        if changed:
            return (
                fp,
                f"input {changed} changed while the step ran: not recorded, it runs again next time",
            )
        self._put(
            step.name,
            {
                "key": decision.key,
                "parts": decision.parts,
                "fingerprint": fp,
                "time": time.time(),
                "duration": duration,
                "stats": dict(result.stats),
                "outputs": outputs,
                "input_stats": input_stats(decision.parts, decision.stats),
            },
        )
        return fp, ""

    def _share(self, outputs: dict[str, list]) -> None:
        """Upload the declared output files to a shared store, content-addressed, so another
        runner whose record matches restores them instead of running the step again."""
        store = self.store
        if store is None or not getattr(store, "shares_artifacts", False) or store.read_only:
            return
        for rel, (_, _, d) in outputs.items():
            path = self.project.root / rel
            if path.is_file() and not store.has_artifact(d):
                store.put_artifact(d, path)

    def touch(self, step: Step, upstream: dict[str, str]) -> None:
        """``eltmake touch``: accept the current outputs as what the step built (Make's ``-t``).

        The fingerprint is the digest of what is there now, so the steps below re-run when the
        accepted outputs differ from what they last saw."""
        parts, _ = self.parts(step, upstream)
        key = key_of(parts)
        outputs = self.output_snapshot(step)
        old = self.records.get(step.name) or {}
        if step.outputs:
            fp = digest({k: v[2] for k, v in outputs.items()})
        elif old.get("key") == key:
            fp = old["fingerprint"]
        else:
            fp = key
        self._put(
            step.name,
            {
                "key": key,
                "parts": parts,
                "fingerprint": fp,
                "time": time.time(),
                "duration": 0.0,
                "stats": {"touched": True},
                "outputs": outputs,
            },
        )

    def recorded_fingerprint(self, name: str, preds: dict[str, list[str]]) -> str | None:
        """The fingerprint a target last produced (an aggregate: its dependencies'), or None."""
        if self.project.targets[name].kind is not None:
            rec = self.records.get(name)
            return rec["fingerprint"] if rec else None
        fps = {p: self.recorded_fingerprint(p, preds) for p in preds[name]}
        return None if None in fps.values() else digest(fps)

    def _put(self, name: str, record: dict[str, Any]) -> None:
        self.records[name] = record
        if self.store is not None:
            self.store.put_record(self.scope, name, record)

    def output_snapshot(self, step: Step) -> dict[str, list]:
        """{output: [size, mtime_ns, digest]} after a run; a folder's digest covers its files."""
        out: dict[str, list] = {}
        root = self.project.root
        for rel in step.outputs:
            try:
                st = os.stat(os.path.join(root, rel))
            except FileNotFoundError:
                continue
            d, _ = self.cache.file_digest(root, rel)
            out[rel] = [st.st_size, st.st_mtime_ns, d]
        return out


# --- the parts of a decision, as functions ------------------------------------------------------


def key_of(parts: dict[str, Any]) -> str:
    """The key: one digest of the parts. Every value in them is already a digest (or a short
    word), so the parts are joined in a fixed order instead of being JSON-encoded: a no-op build
    of 10,000 targets computes 10,000 keys."""
    import hashlib

    pieces = [str(parts["format"]), parts["kind"]]
    for section in ("definition", "inputs", "upstream"):
        values = parts[section]
        pieces.append(section)
        for k in sorted(values):
            pieces += (k, str(values[k]))
    return hashlib.blake2b("\0".join(pieces).encode(), digest_size=16).hexdigest()


def definition_digests(project: Project, step: Step) -> dict[str, str]:
    """One digest per key of the target's table (but those that change nothing) and per fact
    the recipe adds, so that a change can be named."""
    definition = {k: digest(v) for k, v in step.target.config.items() if k not in NOT_IN_KEY}
    extra = project.recipes[step.kind].definition(project, step)
    for k, v in (extra or {}).items():
        definition[k] = digest(v)
    return definition


def definition_digest(project: Project, step: Step) -> str:
    """One digest of what a step does, its deps included: watch mode cancels a running step
    whose definition an edit of the project file changed, and lets the others finish."""
    return digest([definition_digests(project, step), sorted(step.target.deps)])


def recorded_parts(rec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a record's key; the store hands them over as JSON text, decoded only here
    (a step that is skipped never needs them)."""
    parts = rec.get("parts")
    if isinstance(parts, str):
        try:
            parts = json.loads(parts)
        except ValueError:
            parts = None
        rec["parts"] = parts
    return parts if isinstance(parts, dict) else {}


def explain(parts: dict[str, Any], rec: dict[str, Any] | None) -> list[str]:
    """Why a key differs from the recorded one, in words, most useful first."""
    if rec is None:
        return ["never built"]
    old = recorded_parts(rec)
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


def input_stats(parts: dict[str, Any], stats: dict[str, tuple | None]) -> dict[str, list]:
    """{input: [*stat, digest]} for a record, so the next decision needs no stat-cache lookup."""
    return {
        rel: [*sig, parts["inputs"][rel]]
        for rel, sig in stats.items()
        if sig and time.time() - sig[1] / 1e9 > RACY_S
    }


def inputs_changed_since(project: Project, stats: dict[str, tuple | None]) -> str | None:
    """The first input whose stat moved while the step ran, or ``None``."""
    for rel, sig in stats.items():
        if sig == ():
            continue  # a folder: its own stat says nothing of its files
        try:
            st = os.stat(os.path.join(project.root, rel))
            now = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        except FileNotFoundError:
            now = None
        if now != sig:
            return rel
    return None
