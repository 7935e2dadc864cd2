"""The two kinds of failure a user sees, and the exit codes they map to."""

from __future__ import annotations


class EltmakeError(Exception):
    """Base class: the message is shown as is, without a traceback (unless ``--debug``)."""

    exit_code = 1


class ConfigError(EltmakeError):
    """Bad input: a project file, a key, a value or a command-line argument. Exit code 2.

    The message is one line that says where (file, table, key), what is wrong and what to do.
    """

    exit_code = 2


class StepError(EltmakeError):
    """A step failed. ``tail`` holds the last lines of the tool's output, shown under the message."""

    exit_code = 1

    def __init__(self, message: str, tail: list[str] | None = None):
        super().__init__(message)
        self.tail = list(tail or [])


class Cancelled(EltmakeError):
    """A step was stopped because the build was interrupted or superseded (watch mode)."""

    exit_code = 130


def did_you_mean(word: str, choices) -> str:
    """A "did you mean" suffix for an unknown name, or an empty string when nothing is close."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
