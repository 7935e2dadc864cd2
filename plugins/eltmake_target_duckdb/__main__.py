"""``python -m eltmake_target_duckdb``: the same as the ``eltmake-target-duckdb`` command."""

from . import main

raise SystemExit(main())
