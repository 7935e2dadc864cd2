"""Starting dbt without its secrets in the process table.

``dbt --vars '{...}'`` puts every var on dbt's command line, which every local user can read
(``ps``). When a var is named like a secret, dbt is started by its environment's python through a
one-line launcher that reads the arguments from a file in a private folder and removes it at
once; the console output and exit code are dbt's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eltmake_dbt.config import Transformer

# Runs dbt as its console script does, with the arguments read from a file the launcher removes
# at once: ``--vars`` holding a secret never shows in ``ps``.
LAUNCH = (
    "import json, os, sys; p = sys.argv[1]; args = json.load(open(p)); os.unlink(p); "
    "sys.argv = ['dbt', *args]; from dbt.cli.main import cli; sys.exit(cli())"
)


def secret_vars(tf: Transformer, cfg: dict[str, Any]) -> dict[str, Any]:
    """The vars whose names look secret (``api_token``, ``password``…): kept out of argv."""
    from eltmake.api import looks_secret

    variables = {**tf.vars, **(cfg.get("vars") or {})}
    return {k: v for k, v in variables.items() if looks_secret(k)}


def launch_argv(argv: list[str], private: Path) -> list[str]:
    """The same dbt command, run by the dbt environment's python from a private file."""
    python = Path(argv[0]).parent / "python"
    if not python.exists():  # a dbt found on PATH: no environment to launch it from
        return argv
    path = private / "dbt-args.json"
    path.write_text(json.dumps(argv[1:]))
    path.chmod(0o600)
    return [str(python), "-c", LAUNCH, str(path)]


def has_secret_vars(argv: list[str]) -> bool:
    """Whether a dbt command line carries a ``--vars`` with a var named like a secret."""
    from eltmake.api import looks_secret

    for i, word in enumerate(argv[:-1]):
        if word == "--vars":
            try:
                return any(looks_secret(k) for k in json.loads(argv[i + 1]))
            except (ValueError, TypeError):
                return False
    return False
