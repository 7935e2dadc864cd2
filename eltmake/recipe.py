"""A kind of step, as an object: what a plugin implements to add one.

eltmake dispatches on a target's kind: the target holds the recipe's ``marker`` key (``run`` for
commands, ``extract`` for Singer, ``transform`` for dbt), and every question about its step (its
key, its inputs, whether its outputs still stand, how to run it, which tools it needs) goes to
that one recipe. A plugin registers its recipes with the ``eltmake_add_recipes`` hook, as hatch
registers builders: no recipe method is ever called for another kind's step, so none needs to
check ``step.kind``.

Subclass :class:`Recipe`, set :attr:`kind`, :attr:`marker` and :attr:`keys`, and implement
:meth:`run`; the other methods have defaults that suit a step whose only inputs are its declared
``inputs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from eltmake.step import Step

if TYPE_CHECKING:
    from eltmake.project import Project, Target
    from eltmake.step import StepContext, StepResult


class Recipe:
    """The interface of a step kind. One instance serves every target of its kind in a project.

    Methods that run on every decision (:meth:`make_step`, :meth:`definition`, :meth:`inputs`,
    :meth:`check_outputs`) must be cheap: a no-op build calls them for every target. They are
    called from the main thread; :meth:`run` is called from a worker (a thread, or a process on
    another machine with a cluster executor), so a recipe must not keep per-run state on itself.
    """

    #: The kind's name, shown in ``eltmake list`` and the graph ("command", "singer", "dbt").
    kind: ClassVar[str] = ""
    #: The target key that makes a target this kind (``run``, ``extract``, ``transform``).
    marker: ClassVar[str] = ""
    #: The target keys this kind uses, with the Python types their values may have; the core
    #: refuses a wrong type, or a key of another kind, with a one-line message.
    keys: ClassVar[dict[str, tuple[type, ...]]] = {}
    #: A colour name (rich's) for the kind in the terminal graph.
    color: ClassVar[str] = "blue"

    def validate(self, project: Project, target: Target) -> None:
        """Check one target of this kind after the core checked key types; raise ConfigError."""

    def make_step(self, project: Project, target: Target) -> Step:
        """Turn a target of this kind into a :class:`Step` (once per target and build).

        Work out here, once, what later calls need (``params``): the step is not changed after.
        """
        return Step(
            name=target.name,
            kind=self.kind,
            target=target,
            inputs=list(target.inputs),
            outputs=list(target.outputs),
            freshness=target.freshness,
        )

    def definition(self, project: Project, step: Step) -> dict[str, Any]:
        """Facts beyond the target's own table that should re-run the step when they change.

        The core already keys the target's table; return JSON-able extras (the tool's installed
        identity, resolved non-secret config, a digest of secrets). Each key is named in ``-n``
        explanations ("definition changed: KEY").
        """
        return {}

    def inputs(self, project: Project, step: Step) -> list[str]:
        """Files the step reads beyond its declared ``inputs`` (e.g. the dbt models it selects),
        relative to the project root: their content enters the key, and watch mode watches them."""
        return []

    def check_outputs(self, project: Project, step: Step, record: dict[str, Any]) -> str | None:
        """Whether what the step produced still stands, beyond its declared ``outputs`` files.

        Called for a step whose key matches its record, before skipping it. Return a reason
        ("table raw.orders is missing") to make it run, or None. Cheap checks only: existence from
        a catalog, never a scan.
        """
        return None

    def run(self, ctx: StepContext) -> StepResult:
        """Run the step. Start child processes only with ``ctx.popen``; raise StepError on failure.

        Return a :class:`StepResult`; its ``fingerprint`` (when set) is the step's output
        fingerprint for early cutoff.
        """
        raise NotImplementedError(f"recipe {self.kind!r} does not implement run()")

    def secrets(self, project: Project, step: Step) -> list[str]:
        """Secret values the step may print (a token in its environment): the core masks them
        in its output lines, errors and the run history. Called only for a step that runs."""
        return []

    def tools(self, project: Project, step: Step) -> list[str]:
        """The names of the tools (from ``eltmake_tools``) the step needs installed before it runs."""
        return []

    def written_paths(self, project: Project) -> list[str]:
        """Folders (relative to the project root) that steps of this kind write while they run,
        which watch mode must never take for edits (dbt's ``target/`` and ``logs/``)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind!r} marker={self.marker!r}>"
