"""Digests: the one way eltmake names content, for keys, fingerprints and cache files.

A module of its own, importing nothing from eltmake, so that every room (project loading, the
plugin manager, the decisions, the plugins) can use it without pulling in another.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_ESCAPED = set('"\\')


def digest(data: Any) -> str:
    """A short stable digest of JSON-able data (keys sorted) or bytes.

    A plain printable string is digested as its JSON form without the encoder (most definition
    values are such strings, and a no-op build of 10,000 targets digests tens of thousands).
    """
    if isinstance(data, str) and data.isascii() and data.isprintable() and not _ESCAPED & set(data):
        data = b'"' + data.encode() + b'"'  # what json.dumps gives, without the encoder's cost
    elif not isinstance(data, bytes):
        # json, not orjson: importing orjson costs more start-up than it saves on small dicts.
        data = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str) -> str:
    """The content digest of a file, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
