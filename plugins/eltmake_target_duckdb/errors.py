"""The two ways a load can fail, so the command line can pick the exit code without a traceback."""


class TargetError(Exception):
    """A failure that is not the input's fault (the database cannot be opened, the disk is full).

    Exit code 1: the run failed; nothing uncommitted was reported as done.
    """

    exit_code = 1


class InputError(TargetError):
    """The config or the message stream is wrong (bad JSON, a value that does not fit its column).

    Exit code 2, like every other bad-input case in eltmake: fixing the input is the remedy.
    """

    exit_code = 2
