"""Secrets: which names hold one, and masking their values in whatever eltmake shows or keeps.

One rule for every plugin and the core: a setting or variable is secret when it is listed as one,
or its name looks like one (password, token, secret, credential, apikey, or a ``key`` at the end).
A secret's value never appears in logs, errors, ``--json`` events, the run history or traces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "****"
SECRET_NAME = re.compile(
    r"(password|passwd|passphrase|token|secret|credential|apikey|(^|[_-])key$)", re.I
)


def looks_secret(name: str) -> bool:
    """Whether a setting or variable named ``name`` holds a secret by its name alone."""
    return bool(SECRET_NAME.search(name))


class Redactor:
    """Replaces every given secret value with ``****`` in a line of text."""

    def __init__(self, values: Iterable[str]):
        # Longest first, so a secret that contains another is masked whole. Very short values
        # ("1", "no") would mask innocent text everywhere; they are still masked in config output.
        self.values = sorted({str(v) for v in values if len(str(v)) >= 3}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text
