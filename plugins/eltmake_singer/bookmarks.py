"""Merging Singer state, per stream.

A Singer state is a JSON object whose ``bookmarks`` maps each stream to its bookmark. A target
emits the state it has committed; eltmake stores it under the target's ``state_id``. Merging
per stream (not replacing the whole object, as a plain "last state wins" does) is what keeps a
run over a subset of streams, or a ``--full-refresh``, from wiping the other streams' bookmarks
(a long-standing Meltano complaint).
"""

from __future__ import annotations

from typing import Any


def merge_state(stored: Any, emitted: Any) -> Any:
    """``stored`` updated with ``emitted``: ``bookmarks`` merged per stream, other keys replaced.

    A stream's bookmark is replaced whole (never merged key by key: a tap's bookmark is one
    value, and half of an old one mixed with half of a new one would be neither). Top-level keys
    the new state does not mention are kept. A state that is not an object replaces everything.
    """
    if not isinstance(emitted, dict):
        return emitted
    if not isinstance(stored, dict):
        return dict(emitted)
    merged = dict(stored)
    for key, value in emitted.items():
        old = stored.get(key)
        if key == "bookmarks" and isinstance(value, dict) and isinstance(old, dict):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def drop_streams(state: Any, streams: list[str]) -> Any:
    """A copy of ``state`` without the bookmarks of ``streams`` (they start from scratch)."""
    if not isinstance(state, dict) or not isinstance(state.get("bookmarks"), dict):
        return state
    out = dict(state)
    out["bookmarks"] = {k: v for k, v in state["bookmarks"].items() if k not in set(streams)}
    if out.get("currently_syncing") in streams:
        out["currently_syncing"] = None
    return out


def state_streams(state: Any) -> list[str]:
    """The streams that have a bookmark in ``state``."""
    if isinstance(state, dict) and isinstance(state.get("bookmarks"), dict):
        return sorted(state["bookmarks"])
    return []


def unwrap_state_line(obj: Any) -> Any:
    """The state in a line a target wrote: the bare value, or a ``{"type": "STATE", "value": ...}``
    message (some targets forward the message as is)."""
    if isinstance(obj, dict) and obj.get("type") == "STATE" and "value" in obj:
        return obj["value"]
    return obj
