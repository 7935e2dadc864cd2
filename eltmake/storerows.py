"""How step records and history rows are encoded: shared by every store backend, so a store
migrated from one backend to another reads the same."""

from __future__ import annotations

import json
from typing import Any


def encode_record(record: dict[str, Any]) -> tuple[str, str | None]:
    """(the record without its parts, its parts) as JSON texts."""
    head = {k: v for k, v in record.items() if k != "parts"}
    parts = record.get("parts")
    if parts is not None and not isinstance(parts, str):
        parts = json.dumps(parts, separators=(",", ":"))
    return json.dumps(head, separators=(",", ":")), parts


def decode_records(rows: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for name, value, parts in rows:
        try:
            rec = json.loads(value)
        except ValueError:  # a damaged record: the step runs again and writes a good one
            continue
        if isinstance(rec, dict):
            rec["parts"] = parts
            out[name] = rec
    return out


FAILED = ("failed", "upstream_failed", "cancelled")


def history_rows(rows: Any, counts: Any) -> list[dict[str, Any]]:
    """Runs as dicts, newest first, with the count of steps in each status."""
    by_run: dict[int, dict[str, int]] = {}
    for run_id, status, n in counts:
        by_run.setdefault(run_id, {})[status] = n
    out = []
    for rid, started, ended, status, command, targets, env in rows:
        c = by_run.get(rid, {})
        out.append(
            {
                "id": rid,
                "started": started,
                "ended": ended,
                "status": status,
                "command": command,
                "targets": json.loads(targets or "[]"),
                "env": env,
                "counts": c,
                "built": c.get("built", 0),
                "skipped": c.get("skipped", 0),
                "failed": sum(c.get(s, 0) for s in FAILED),
            }
        )
    return out


def step_rows(rows: Any) -> list[dict[str, Any]]:
    keys = ["target", "status", "reason", "started", "ended", "stats", "error"]
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for r in out:
        try:
            r["stats"] = json.loads(r["stats"] or "{}")
        except ValueError:
            r["stats"] = {}
    return out


def run_row(run: dict[str, Any]) -> tuple:
    """A run from ``runs()`` as the values of a runs row (without its id)."""
    return (
        run["started"],
        run.get("ended"),
        run.get("status"),
        run.get("command"),
        json.dumps(run.get("targets") or []),
        run.get("env"),
    )


def steps_rows(run_id: int, steps: list[dict[str, Any]]) -> list[tuple]:
    """Steps from ``run_steps()`` as steps rows of ``run_id``."""
    return [
        (run_id, s["target"], s["status"], s.get("reason"), s.get("started"), s.get("ended"))
        + (json.dumps(s.get("stats") or {}), s.get("error") or "")
        for s in steps
    ]
