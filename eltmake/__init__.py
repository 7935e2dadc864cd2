"""eltmake: Make-style ELT builds (Singer extract-load, dbt, commands) with a content-hash cache.

Plugins import :data:`hookimpl` from here; the contract is in :mod:`eltmake.hookspecs`.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `eltmake --version` does not pay for importing pluggy.
    if name == "hookimpl":
        import pluggy

        return pluggy.HookimplMarker("eltmake")
    raise AttributeError(name)
