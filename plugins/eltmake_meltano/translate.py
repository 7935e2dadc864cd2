"""``meltano.yml`` → ``eltmake.toml`` text, and the list of what could not be translated.

Argparse-free and side-effect-free: :func:`translate` takes a read project
(:mod:`eltmake_meltano.meltano`) and returns a :class:`Translation`. docs/from-meltano.md says
what maps to what; the choices below carry a "why".

Names. Tool tables keep the Meltano plugin names (a mapper's *mappings* become one
``[mappers.MAPPING]`` each: a Meltano task names mappings, not the mapper). An extract-load task
``tap [mapping…] target`` becomes the target ``TAP-to-TARGET``, which is Meltano's own state id
for the pair without its environment prefix, so the bookmarks of ``dev:TAP-to-TARGET`` belong to
it. When the same pair appears with other mappers or in another order of tasks, the new target
gets a longer name and ``state_id = "TAP-to-TARGET"``: Meltano keeps one state per pair too.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

# SECRET_NAME: named like a secret, eltmake's own rule, so both agree on what is masked.
from eltmake.api import SECRET_NAME, ConfigError, did_you_mean
from eltmake_meltano import tomlw
from eltmake_meltano.expand import PIPELINE_VARS, Expander, references
from eltmake_meltano.meltano import MeltanoProject, Plugin, deep_merge

SINGER_TYPES = ("extractors", "loaders", "mappers")
DBT_COMMANDS = ("build", "run", "test", "seed", "snapshot")  # what eltmake's dbt targets run
KNOWN_CAPABILITIES = {
    "about", "activate-version", "batch", "catalog", "discover", "log-based", "properties",
    "schema-flattening", "state", "stream-maps", "structured-logging", "test", "target-schema",
    "validate-records", "hard-delete", "datatype-failsafe", "soft-delete",
}  # fmt: skip
SECRET_KINDS = {"password", "oauth"}
TOOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
WHY_NOT = {
    "utilities": "a utility is a tool of its own that eltmake does not manage; if a job needs "
    "it, add a command target (run = ...) that calls it",
    "orchestrators": "eltmake has no orchestrator plugins; the schedules are at the end of this "
    "file as cron lines",
    "files": "a file bundle writes files into the project once; they are already there",
    "transforms": "a dbt package that Meltano installs; list it in the dbt project's "
    "packages.yml instead",
    "transformers": "only dbt transformers are translated",
}
IGNORED_KEYS = {
    "name", "variant", "pip_url", "executable", "namespace", "config", "select", "capabilities",
    "settings", "inherit_from", "annotations", "label", "logo_url", "docs", "repo", "ext_repo",
    "description", "settings_group_validation", "plugin_type", "mappings", "requires",
    "requires_meltano", "use_cached_catalog", "hidden", "keywords", "domain_url", "maintenance_status",
    "dialect", "target_schema", "load_schema", "supported_python_versions",
}  # fmt: skip


@dataclass
class Note:
    """One thing not translated: where it was and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ELTarget:
    """An extract-load target: tap, mappings, loader (table names as written in eltmake.toml)."""

    name: str
    tap: str
    maps: list[str]
    loader: str  # the Meltano loader; the table may be a per-pipeline copy (see loader_table)
    deps: list[str] = field(default_factory=list)
    state_id: str | None = None
    description: str = ""
    loader_table: str = ""


@dataclass
class DbtTarget:
    name: str
    transformer: str
    command: str
    select: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    full_refresh: bool = False
    vars: dict[str, Any] | None = None
    deps: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class Translation:
    text: str
    notes: list[Note]
    needed: list[str]  # ${VAR} the result reads without a default
    environments: list[str]
    el_targets: dict[str, ELTarget]


# --- the entry point --------------------------------------------------------------------------


def translate(project: MeltanoProject, state_ids: list[str] | None = None) -> Translation:
    """Translate ``project``. ``state_ids`` (Meltano's, when known) add a target for each
    ``tap-to-target`` pair Meltano ran that no job names, so that its bookmarks have a home."""
    return _Translator(project, state_ids or []).run()


class _Translator:
    def __init__(self, project: MeltanoProject, state_ids: list[str]):
        self.p = project
        self.state_ids = state_ids
        self.notes: list[Note] = []
        self._seen_notes: set[tuple[str, str]] = set()
        self.needed: set[str] = set()
        self.el: dict[str, ELTarget] = {}
        self.dbt: dict[str, DbtTarget] = {}
        self.jobs: dict[str, tuple[list[str], str]] = {}  # aggregate -> (deps, description)
        self.env_vars = _env_values(project.data.get("env"), "env", self)
        self.mappings: dict[str, tuple[Plugin, dict[str, Any]]] = {}  # mapping -> (mapper, config)
        self.dbt_plugins: dict[str, str] = {}  # Meltano dbt plugin name -> transformer table
        self.skipped_plugins: dict[str, str] = {}  # Meltano plugin -> why it has no table

    def note(self, where: str, reason: str) -> None:
        # An environment's tables are translated again; say each thing about a plugin once.
        plain = re.sub(r"^environments\.[^.]+\.(?=plugins\.)", "", where)
        if plain != where and (plain, reason) in self._seen_notes:
            return
        if (where, reason) not in self._seen_notes:
            self._seen_notes.add((where, reason))
            self.notes.append(Note(where, reason))

    # --- orchestration ------------------------------------------------------------------------

    def run(self) -> Translation:
        default_env = self.p.default_environment
        if default_env and default_env not in {
            e["name"] for e in self.p.data.get("environments") or []
        }:
            self.note("default_environment", f"{default_env!r} is not defined in environments")
        self._classify_plugins()
        self._jobs()
        self._check_schedules()
        self._elt_schedules()
        self._pipelines_from_state()
        base = self._tables(env_name=None, overrides={}, env_vars=self.env_vars)
        envs = self._environments(base)
        text = self._render(base, envs)
        return Translation(
            text=text,
            notes=self.notes,
            needed=sorted(self.needed),
            environments=[e for e, _ in envs],
            el_targets=self.el,
        )

    # --- plugins -----------------------------------------------------------------------------

    def _classify_plugins(self) -> None:
        dbt = [p for p in self.p.all_plugins() if _is_dbt(p)]
        for plugin in dbt:
            self.dbt_plugins[plugin.name] = "dbt" if len(dbt) == 1 else plugin.name
        for plugin in self.p.all_plugins():
            where = f"plugins.{plugin.type}.{plugin.name}"
            if plugin.name in self.dbt_plugins:
                continue
            if plugin.type not in SINGER_TYPES:
                self.skipped_plugins[plugin.name] = WHY_NOT[plugin.type]
                self.note(where, WHY_NOT[plugin.type])
                continue
            if not TOOL_NAME.match(plugin.name):
                why = "eltmake tool names hold letters, digits, '-', '_' and '.'; rename it"
                self.skipped_plugins[plugin.name] = why
                self.note(where, why)
                continue
            if not plugin.get("pip_url") and not plugin.raw.get("executable"):
                why = (
                    "no pip_url and no lock file (plugins/"
                    f"{plugin.type}/{plugin.base_name}--VARIANT.lock): Meltano would ask the Hub, "
                    "eltmake does not; add pip_url (and executable) to the plugin"
                )
                self.skipped_plugins[plugin.name] = why
                self.note(where, why)
                continue
            if plugin.type == "mappers":
                mappings = plugin.get("mappings") or []
                if not mappings:
                    self.mappings[plugin.name] = (plugin, {})
                for i, m in enumerate(mappings):
                    if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                        raise ConfigError(f"{plugin.where}.mappings[{i}]: needs a name and config")
                    if not TOOL_NAME.match(m["name"]):
                        self.note(f"{where}.mappings.{m['name']}", "not a valid eltmake tool name")
                        continue
                    cfg = m.get("config") or {}
                    if not isinstance(cfg, dict):
                        raise ConfigError(f"{plugin.where}.mappings[{i}].config: must be a mapping")
                    self.mappings[m["name"]] = (plugin, cfg)
        singer_names: dict[str, str] = {}
        for ptype in ("extractors", "loaders"):
            for name in self.p.plugins[ptype]:
                if name not in self.skipped_plugins:
                    singer_names.setdefault(name, ptype)
        for name, (mapper, _) in self.mappings.items():
            if name in singer_names:
                raise ConfigError(
                    f"{mapper.where}: the mapping {name!r} has the name of one of the "
                    f"{singer_names[name]}; eltmake names tools alone: rename one"
                )

    def _tables(
        self,
        env_name: str | None,
        overrides: dict[tuple[str, str], dict[str, Any]],
        env_vars: dict[str, str],
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Every tool and transformer table, for the base project or one environment."""
        prefix = f"environments.{env_name}." if env_name else ""
        tables: dict[str, dict[str, dict[str, Any]]] = {
            "extractors": {},
            "loaders": {},
            "mappers": {},
            "transformers": {},
        }
        for name, plugin in self.p.plugins["extractors"].items():
            if name in self.skipped_plugins:
                continue
            ov = overrides.get(("extractors", name))
            tables["extractors"][name] = self._singer(plugin, ov, env_vars, prefix)
        for table, (plugin, pipeline) in self._loader_tables().items():
            ov = overrides.get(("loaders", plugin.name))
            tables["loaders"][table] = self._singer(plugin, ov, env_vars, prefix, pipeline)
        for mapping, (plugin, cfg) in self.mappings.items():
            ov = overrides.get(("mappers", plugin.name))
            tables["mappers"][mapping] = self._singer(plugin, ov, env_vars, prefix, extra=cfg)
        for name, tname in self.dbt_plugins.items():
            plugin = self.p.find(name)
            assert plugin is not None
            ov = overrides.get((plugin.type, name))
            tables["transformers"][tname] = self._transformer(plugin, ov, env_vars, prefix)
        return tables

    def _singer(
        self,
        plugin: Plugin,
        override: dict[str, Any] | None,
        env_vars: dict[str, str],
        prefix: str,
        pipeline: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One ``[extractors|loaders|mappers.NAME]`` table."""
        where = f"{prefix}plugins.{plugin.type}.{plugin.name}"
        expander = Expander(defaults=env_vars, pipeline=pipeline, note=self.note)
        out: dict[str, Any] = {}
        pip_url = plugin.get("pip_url")
        if pip_url:
            out["pip_url"] = expander(str(pip_url), f"{where}.pip_url")
        executable = plugin.get("executable") or plugin.base_name
        if executable != plugin.name or not pip_url:
            out["executable"] = executable
        config = plugin.config
        if extra:
            config = deep_merge(config, extra)
        if override and isinstance(override.get("config"), dict):
            config = deep_merge(config, override["config"])
        config = self._pipeline_defaults(plugin, config, pipeline)
        secrets = _secret_settings(plugin)
        cfg, secret_keys = self._config(plugin, config, secrets, expander, f"{where}.config")
        if cfg:
            out["config"] = cfg
        if plugin.type == "extractors":
            select = (override or {}).get("select") or plugin.get("select")
            if select:
                if not all(isinstance(s, str) for s in select):
                    raise ConfigError(f"{plugin.where}.select: must be a list of patterns")
                out["select"] = list(select)
        caps = plugin.get("capabilities")
        if caps:
            known = [c for c in caps if c in KNOWN_CAPABILITIES]
            unknown = [c for c in caps if c not in KNOWN_CAPABILITIES]
            if unknown:
                self.note(f"{where}.capabilities", f"not known to eltmake, left out: {unknown}")
            if known:
                out["capabilities"] = known
        listed = sorted(
            {s for s in secrets if "." not in s} | {k for k in secret_keys if "." not in k}
        )
        if listed:
            out["secrets"] = listed
        for key in ("metadata", "schema"):
            value = (override or {}).get(key) or plugin.get(key)
            if value:
                self.note(
                    f"{where}.{key}",
                    f"eltmake has no {key} overrides for a tap's catalog; not applied: "
                    f"{_short(value)}",
                )
        for key in ("select_filter", "catalog", "state", "env", "commands", "python"):
            value = (override or {}).get(key) or plugin.raw.get(key)
            if value:
                why = {
                    "select_filter": "eltmake selects with select alone",
                    "catalog": "eltmake discovers the catalog (cached); a catalog file is not used",
                    "state": "a state file: use `eltmake state set` or `import meltano --state`",
                    "env": "eltmake passes the shell's and .env's variables to Singer tools; put "
                    "these in .env",
                    "commands": "eltmake runs taps and targets only in pipelines",
                    "python": "eltmake installs tools with the Python it runs on",
                }[key]
                self.note(f"{where}.{key}", why)
        return out

    def _pipeline_defaults(
        self, plugin: Plugin, config: dict[str, Any], pipeline: dict[str, str] | None
    ) -> dict[str, Any]:
        """A loader setting whose Hub default is a pipeline variable (target-postgres'
        ``default_target_schema: $MELTANO_EXTRACT__LOAD_SCHEMA``) is what decides where Meltano
        loads; eltmake knows no defaults, so the value for the pair is written out."""
        if plugin.type != "loaders" or pipeline is None:
            return config
        out = dict(config)
        for setting in plugin.settings():
            name, value = setting.get("name"), setting.get("value")
            if (
                isinstance(name, str)
                and "." not in name
                and name not in out
                and isinstance(value, str)
                and any(v in PIPELINE_VARS for v in references(value))
            ):
                out[name] = value
        return out

    def _config(
        self,
        plugin: Plugin,
        config: dict[str, Any],
        secrets: set[str],
        expander: Expander,
        where: str,
    ) -> tuple[dict[str, Any], set[str]]:
        """Config with variables rewritten, secrets as ``${ENV}`` references, nulls handled."""
        found: set[str] = set()

        def walk(value: Any, path: list[str]) -> Any:
            dotted = ".".join(path)
            leaf = path[-1] if path else ""
            secret = dotted in secrets or bool(SECRET_NAME.search(leaf))
            if isinstance(value, dict):
                out = {}
                for k, v in value.items():
                    got = walk(v, [*path, str(k)])
                    if got is not _DROP:
                        out[str(k)] = got
                return out
            if isinstance(value, list):
                return [
                    x
                    for x in (walk(v, [*path, str(i)]) for i, v in enumerate(value))
                    if x is not _DROP
                ]
            if value is None:
                if "stream_maps" in path:
                    return "__NULL__"  # the Singer SDK's spelling of null in stream maps
                self.note(
                    f"{where}.{dotted}",
                    "null: TOML has no null, so the setting is left out (the tool's default)",
                )
                return _DROP
            if secret and value != "":
                found.add(dotted)
                if isinstance(value, str) and references(value):
                    return expander(value, f"{where}.{dotted}")
                var = _env_name(_owner(plugin, path)) + "_" + _env_name(dotted)
                self.needed.add(var)
                self.note(
                    f"{where}.{dotted}",
                    f"a secret written in meltano.yml was not copied: set {var} in .env "
                    "(or the shell)",
                )
                return f"${{{var}}}"
            if isinstance(value, str):
                return expander(value, f"{where}.{dotted}")
            if not isinstance(value, int | float):  # YAML's !!binary, !!set: no TOML type
                self.note(f"{where}.{dotted}", f"a {type(value).__name__} value, written as text")
                return str(value)
            return value

        result = walk(config, [])
        self.needed |= expander.needed
        return result, found

    def _transformer(
        self,
        plugin: Plugin,
        override: dict[str, Any] | None,
        env_vars: dict[str, str],
        prefix: str,
    ) -> dict[str, Any]:
        """``[transformers.dbt]``: the same dbt project; settings that Meltano hands dbt as
        environment variables (``DBT_POSTGRES_HOST``, read by profiles.yml) go to ``env``."""
        where = f"{prefix}plugins.{plugin.type}.{plugin.name}"
        expander = Expander(defaults=env_vars, note=self.note)
        config = plugin.config
        if override and isinstance(override.get("config"), dict):
            config = deep_merge(config, override["config"])
        out: dict[str, Any] = {}
        pip_url = str(plugin.get("pip_url") or "")
        words = pip_url.split()
        kept = [w for w in words if "dbt-ext" not in w and "dbt_ext" not in w]
        if len(kept) != len(words):
            self.note(
                f"{where}.pip_url",
                "Meltano's dbt extension (dbt-ext) left out: eltmake runs dbt itself",
            )
        if kept:
            out["pip_url"] = expander(" ".join(kept), f"{where}.pip_url")
        else:
            out["pip_url"] = "dbt-core"
            self.note(
                f"{where}.pip_url",
                "no pip_url: wrote dbt-core; add your adapter (dbt-postgres, ...)",
            )
        adapter = plugin.base_name.removeprefix("dbt-")
        project_dir = config.get("project_dir")
        out["project_dir"] = (
            expander(str(project_dir), f"{where}.config.project_dir")
            if project_dir
            else "transform"
        )
        profiles_dir = config.get("profiles_dir")
        if profiles_dir:
            out["profiles_dir"] = expander(str(profiles_dir), f"{where}.config.profiles_dir")
        else:
            for candidate in (f"transform/profiles/{adapter}", "transform/profile"):
                if (self.p.root / candidate / "profiles.yml").is_file():
                    out["profiles_dir"] = candidate
                    break
        if isinstance(config.get("target"), str):
            out["target"] = expander(config["target"], f"{where}.config.target")
        secrets = _secret_settings(plugin)
        env: dict[str, Any] = {}
        for k, v in self.env_vars.items():  # Meltano hands the project's env to every plugin
            env[k] = expander(v, f"env.{k}")
        for k, v in env_vars.items() if prefix else ():
            env[k] = expander(v, f"{prefix}env.{k}")
        env_prefix = _env_name(plugin.name) + "_"
        for key, value in _flatten(config).items():
            if key in ("project_dir", "profiles_dir", "target") or value is None:
                continue
            var = env_prefix + _env_name(key)
            if key in secrets or SECRET_NAME.search(key.rsplit(".", 1)[-1]):
                if not (isinstance(value, str) and references(value)):
                    self.note(
                        f"{where}.config.{key}",
                        f"a secret: not copied; dbt reads {var} from the environment or .env",
                    )
                    continue
            if isinstance(value, dict | list):
                import json

                value = json.dumps(value)
            env[var] = expander(value, f"{where}.config.{key}") if isinstance(value, str) else value
        if env:
            out["env"] = env
        self.needed |= expander.needed
        return out

    # --- jobs -----------------------------------------------------------------------------------

    def _jobs(self) -> None:
        for job in self.p.data.get("jobs") or []:
            name = job["name"]
            where = self.p.origins[("jobs", name)]
            tasks = job["tasks"]
            tasks = [tasks] if isinstance(tasks, str) else tasks
            flat: list[tuple[str, str]] = []
            for i, task in enumerate(tasks):
                if isinstance(task, list):
                    for j, t in enumerate(task):
                        if not isinstance(t, str):
                            raise ConfigError(f"{where}.tasks[{i}][{j}]: must be a string")
                        flat.append((f"{where}.tasks[{i}][{j}]", t))
                elif isinstance(task, str):
                    flat.append((f"{where}.tasks[{i}]", task))
                else:
                    raise ConfigError(f"{where}.tasks[{i}]: must be a string or a list of strings")
            chain: list[str] = []
            for twhere, task in flat:
                for block in self._parse_task(task, twhere, f"jobs.{name}"):
                    target = self._add_block(block, chain[-1:] if chain else [], name)
                    if target:
                        chain.append(target)
            agg = name if TOOL_NAME.match(name) else re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            if agg in self.el or agg in self.dbt or agg in self.jobs:
                agg = f"job-{agg}"
            desc = (
                "Meltano job "
                + name
                + ": "
                + "; ".join(t if isinstance(t, str) else " ".join(t) for t in tasks)
            )
            self.jobs[agg] = (list(dict.fromkeys(chain)), desc)

    def _check_schedules(self) -> None:
        jobs = {j["name"] for j in self.p.data.get("jobs") or []}
        for s in self.p.data.get("schedules") or []:
            job = s.get("job")
            if job and job not in jobs:
                where = self.p.origins[("schedules", s["name"])]
                raise ConfigError(
                    f"{where}.job: no job named {job!r}{did_you_mean(str(job), jobs)}; "
                    "define it under jobs: or fix the schedule"
                )

    def _parse_task(self, task: str, where: str, job: str) -> list[tuple]:
        """A task string as blocks: ("el", tap, [mappings], loader), ("dbt", plugin, command),
        or ("skip", text, reason). Unknown names are errors (one line naming the key)."""
        words = task.split()
        blocks: list[tuple] = []
        i = 0
        known = [p.name for p in self.p.all_plugins()] + list(self.mappings)
        while i < len(words):
            word = words[i]
            plugin_name, _, command = word.partition(":")
            plugin = self.p.find(plugin_name)
            if plugin is None and plugin_name not in self.mappings:
                raise ConfigError(
                    f"{where}: no plugin named {plugin_name!r}{did_you_mean(plugin_name, known)}; "
                    "define it under plugins: or fix the task"
                )
            if command or (plugin is not None and plugin.type not in SINGER_TYPES):
                if plugin_name in self.dbt_plugins:
                    blocks.append(("dbt", plugin_name, command, word))
                else:
                    why = (
                        self.skipped_plugins.get(plugin_name) or "not a pipeline step eltmake runs"
                    )
                    blocks.append(("skip", word, why))
                i += 1
                continue
            ptype = plugin.type if plugin is not None else "mappers"
            if ptype != "extractors":
                raise ConfigError(
                    f"{where}: {word!r} is a {ptype[:-1]} with no extractor before it; a Meltano "
                    "task reads `tap [mapping...] target`"
                )
            maps: list[str] = []
            j = i + 1
            while j < len(words):
                w = words[j]
                wp = self.p.find(w)
                if w in self.mappings or (wp is not None and wp.type == "mappers"):
                    maps.append(w)
                    j += 1
                    continue
                break
            if (
                j >= len(words)
                or (self.p.find(words[j]) or Plugin("", "", {}, "")).type != "loaders"
            ):
                got = f"{words[j]!r}" if j < len(words) else "the end of the task"
                raise ConfigError(
                    f"{where}: extractor {word!r} is followed by {got}, not a loader; a Meltano "
                    "task reads `tap [mapping...] target`"
                )
            loader = words[j]
            missing = [n for n in (word, *maps, loader) if n in self.skipped_plugins]
            missing += [m for m in maps if m not in self.mappings]
            if missing:
                why = "; ".join(
                    f"{n}: {self.skipped_plugins.get(n, 'a mapper with mappings: name a mapping')}"
                    for n in missing
                )
                blocks.append(("skip", " ".join(words[i : j + 1]), why))
            else:
                blocks.append(("el", word, maps, loader))
            i = j + 1
        return blocks

    def _add_block(self, block: tuple, deps: list[str], job: str) -> str | None:
        kind = block[0]
        if kind == "skip":
            self.note(f"jobs.{job}: {block[1]}", f"not translated ({block[2]})")
            return None
        if kind == "el":
            _, tap, maps, loader = block
            return self._el_target(tap, maps, loader, deps, job)
        _, plugin_name, command, word = block
        return self._dbt_target(plugin_name, command, word, deps, job)

    def _el_target(
        self, tap: str, maps: list[str], loader: str, deps: list[str], job: str | None
    ) -> str:
        base = f"{tap}-to-{loader}"
        name = base if not maps else f"{base}-via-{'-'.join(maps)}"
        candidate = ELTarget(name, tap, list(maps), loader, list(deps))
        for existing_name in (name, f"{name}--{job}" if job else None):
            if existing_name is None:
                continue
            existing = self.el.get(existing_name)
            if existing is None:
                candidate.name = existing_name
                break
            if (existing.tap, existing.maps, existing.loader, existing.deps) == (
                tap,
                maps,
                loader,
                deps,
            ):
                return existing_name
        else:
            n = 2
            while f"{name}--{n}" in self.el:
                n += 1
            candidate.name = f"{name}--{n}"
        if candidate.name != base:
            candidate.state_id = base  # Meltano keeps one state per tap-target pair
        if job:
            candidate.description = f"from Meltano job {job}"
        self.el[candidate.name] = candidate
        return candidate.name

    def _dbt_target(
        self, plugin_name: str, command: str, word: str, deps: list[str], job: str
    ) -> str | None:
        plugin = self.p.find(plugin_name)
        assert plugin is not None
        where = f"jobs.{job}: {word}"
        if not command:
            self.note(where, "a dbt plugin with no command; write plugin:command (e.g. dbt:run)")
            return None
        commands = plugin.get("commands") or {}
        spec = commands.get(command) if isinstance(commands, dict) else None
        if isinstance(spec, dict):
            args = spec.get("args") or ""
        elif isinstance(spec, str):
            args = spec
        elif command in DBT_COMMANDS:
            args = command
        else:
            self.note(where, f"{plugin_name} has no command {command!r} (plugins' commands:)")
            return None
        try:
            argv = shlex.split(str(args))
        except ValueError as e:
            self.note(where, f"cannot read the command's args {args!r}: {e}")
            return None
        if not argv or argv[0] not in DBT_COMMANDS:
            sub = " ".join(argv[:2]) or "(nothing)"
            self.note(
                where,
                f"`dbt {sub}` is not a build step (eltmake's dbt targets run "
                f"{', '.join(DBT_COMMANDS)}); run it by hand or as a command target",
            )
            return None
        tname = self.dbt_plugins[plugin_name]
        t = DbtTarget(name="", transformer=tname, command=argv[0], deps=list(deps))
        i = 1
        while i < len(argv):
            a = argv[i]
            opt, eq, inline = a.partition("=")
            if opt in ("--select", "-s", "--models", "-m", "--exclude"):
                vals = [inline] if eq else []
                i += 1
                while not eq and i < len(argv) and not argv[i].startswith("-"):
                    vals.append(argv[i])
                    i += 1
                (t.exclude if opt == "--exclude" else t.select).extend(vals)
                continue
            if a == "--full-refresh":
                t.full_refresh = True
            elif opt == "--vars":
                raw = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
                i += 0 if eq else 1
                from eltmake_meltano import yamlfile

                try:
                    parsed = yamlfile.loads(raw, where)
                except ConfigError:
                    parsed = None
                if isinstance(parsed, dict):
                    t.vars = parsed
                else:
                    self.note(where, f"--vars {raw!r} is not a mapping; left out")
            else:
                self.note(
                    where,
                    f"dbt option {a!r} is not translated (eltmake targets take "
                    "select, exclude, vars and full_refresh)",
                )
            i += 1
        suffix = command if re.match(r"^[A-Za-z0-9_.-]+$", command) else "cmd"
        name = f"{tname}-{suffix}"
        for candidate in (name, f"{name}--{job}"):
            existing = self.dbt.get(candidate)
            if existing is None and candidate not in self.el:
                t.name = candidate
                break
            if existing is not None and _same_dbt(existing, t):
                return candidate
        else:
            n = 2
            while f"{name}--{n}" in self.dbt:
                n += 1
            t.name = f"{name}--{n}"
        t.description = f"Meltano task {word} (dbt {' '.join(argv)})"
        self.dbt[t.name] = t
        return t.name

    def _elt_schedules(self) -> None:
        """An ``extractor``/``loader`` schedule runs ``meltano el`` with ``--state-id=NAME``: it
        becomes an extract-load target of that name, so its bookmarks map by name."""
        for s in self.p.data.get("schedules") or []:
            if s.get("job"):
                continue
            where = self.p.origins[("schedules", s["name"])]
            tap, loader = s.get("extractor"), s.get("loader")
            for ref, want in ((tap, "extractors"), (loader, "loaders")):
                if not isinstance(ref, str) or ref not in self.p.plugins[want]:
                    known = list(self.p.plugins[want])
                    raise ConfigError(
                        f"{where}: no {want[:-1]} named {ref!r}{did_you_mean(str(ref), known)}"
                    )
            if tap in self.skipped_plugins or loader in self.skipped_plugins:
                self.note(f"schedules.{s['name']}", "its extractor or loader is not translated")
                continue
            name = s["name"]
            if not TOOL_NAME.match(name) or name in self.el or name in self.dbt:
                name = f"schedule-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
            self.el[name] = ELTarget(
                name, tap, [], loader, state_id=None if name == s["name"] else s["name"],
                description=f"from Meltano schedule {s['name']} ({s.get('interval', '')})",
            )  # fmt: skip
            if s.get("transform", "skip") != "skip":
                self.note(
                    f"schedules.{s['name']}.transform",
                    f"{s['transform']!r}: add a dbt target with deps = [{name!r}]",
                )

    def _pipelines_from_state(self) -> None:
        pairs = {(t.tap, t.loader) for t in self.el.values()}
        for sid in self.state_ids:
            pair = split_state_id(sid, self.p)
            if pair is None or pair[1:] in pairs:
                continue
            _, tap, loader = pair
            if tap in self.skipped_plugins or loader in self.skipped_plugins:
                continue
            pairs.add((tap, loader))
            name = self._el_target(tap, [], loader, [], None)
            self.el[name].description = f"Meltano ran this pipeline (state {sid})"

    def _loader_tables(self) -> dict[str, tuple[Plugin, dict[str, str] | None]]:
        """Loader tables: one per loader, or one per extractor when the loader's config depends
        on the pipeline (``$MELTANO_EXTRACT__LOAD_SCHEMA``) and several extractors use it."""
        out: dict[str, tuple[Plugin, dict[str, str] | None]] = {}
        for name, plugin in self.p.plugins["loaders"].items():
            if name in self.skipped_plugins:
                continue
            taps = sorted({t.tap for t in self.el.values() if t.loader == name})
            if not _uses_pipeline_vars(plugin, self.p) or len(taps) <= 1:
                pipeline = _pipeline(self.p.plugins["extractors"][taps[0]]) if taps else None
                out[name] = (plugin, pipeline)
                for t in self.el.values():
                    if t.loader == name:
                        t.loader_table = name
                continue
            for tap in taps:
                table = f"{name}--{tap}"
                out[table] = (plugin, _pipeline(self.p.plugins["extractors"][tap]))
                for t in self.el.values():
                    if t.loader == name and t.tap == tap:
                        t.loader_table = table
        return out

    # --- environments --------------------------------------------------------------------------

    def _environments(self, base: dict) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        for env in self.p.data.get("environments") or []:
            name = env["name"]
            where = f"environments.{name}"
            if not TOOL_NAME.match(name):
                self.note(where, "not a name eltmake accepts for an environment")
                continue
            overrides: dict[tuple[str, str], dict[str, Any]] = {}
            plugins = (env.get("config") or {}).get("plugins") or {}
            for ptype, items in plugins.items():
                for item in items or []:
                    if self.p.plugins.get(ptype, {}).get(item["name"]) is None:
                        self.note(
                            f"{where}.config.plugins.{ptype}.{item['name']}",
                            f"no such plugin in plugins.{ptype}; left out",
                        )
                        continue
                    overrides[(ptype, item["name"])] = item
                    if item["name"] in self.skipped_plugins:
                        self.note(f"{where}.config.plugins.{ptype}.{item['name']}",
                                  "its plugin is not translated")  # fmt: skip
            env_vars = {**self.env_vars, **_env_values(env.get("env"), f"{where}.env", self)}
            tables = self._tables(name, overrides, env_vars)
            overlay = {
                table: diff
                for table in tables
                if (diff := _diff(base[table], tables[table], f"{where}.{table}", self))
            }
            if env.get("state_id_suffix"):
                self.note(f"{where}.state_id_suffix", "eltmake state ids have no suffix")
            out.append((name, overlay))
        return out

    # --- output --------------------------------------------------------------------------------

    def _render(self, base: dict, envs: list[tuple[str, dict]]) -> str:
        parts: list[str] = []
        files = ", ".join(self.p.files)
        head = [
            f"# Imported from {files} by `eltmake import meltano`.",
            "# What could not be translated is listed at the end of this file.",
        ]
        default_env = self.p.default_environment
        if default_env:
            head.append(
                f"# Meltano's default_environment is {default_env!r}; eltmake has no default "
                f"environment: build with `eltmake build --env {default_env}`."
            )
        parts.append(
            "\n".join(head) + "\n\n" + tomlw.table(["project"], {"name": self.p.root.name})
        )
        for table in ("extractors", "loaders", "mappers", "transformers"):
            for name, body in base[table].items():
                parts.append(tomlw.table([table, name], body))
        for t in self.el.values():
            body: dict[str, Any] = {"extract": t.tap, "load": t.loader_table or t.loader}
            if t.maps:
                body["map"] = t.maps
            if t.state_id:
                body["state_id"] = t.state_id
            if t.deps:
                body["deps"] = t.deps
            if t.description:
                body["description"] = t.description
            parts.append(tomlw.table(["targets", t.name], body))
        for t in self.dbt.values():
            body = {"transform": t.transformer, "command": t.command}
            if t.select:
                body["select"] = t.select if len(t.select) > 1 else t.select[0]
            if t.exclude:
                body["exclude"] = t.exclude if len(t.exclude) > 1 else t.exclude[0]
            if t.full_refresh:
                body["full_refresh"] = True
            if t.vars:
                body["vars"] = _no_nulls(t.vars)
            if t.deps:
                body["deps"] = t.deps
            body["description"] = t.description
            parts.append(tomlw.table(["targets", t.name], body))
        for name, (deps, desc) in self.jobs.items():
            parts.append(tomlw.table(["targets", name], {"deps": deps, "description": desc}))
        for env_name, overlay in envs:
            if not overlay:
                parts.append(f"# environment {env_name}: no overrides\n" + tomlw.table(
                    ["environments", env_name], {}))  # fmt: skip
                continue
            for table, items in overlay.items():
                for name, body in items.items():
                    parts.append(tomlw.table(["environments", env_name, table, name], body))
        sched = self._schedules_comment()
        if sched:
            parts.append(sched)
        if self.notes:
            lines = ["# Not translated (see docs/from-meltano.md):"]
            lines += [f"# - {n}" for n in self.notes]
            parts.append("\n".join(lines) + "\n")
        return "\n".join(parts)

    def _schedules_comment(self) -> str:
        schedules = self.p.data.get("schedules") or []
        if not schedules:
            return ""
        env = self.p.default_environment
        defined = {e["name"] for e in self.p.data.get("environments") or []}
        env_opt = f" --env {env}" if env in defined else ""
        lines = [
            "# Schedules from Meltano. eltmake has no scheduler: these crontab lines run the same",
            "# builds (write the project's folder in place of PROJECT).",
        ]
        for s in schedules:
            interval = str(s.get("interval", ""))
            cron = CRON_ALIASES.get(interval, interval)
            if s.get("job"):
                target = next(
                    (a for a in self.jobs if a in (s["job"], f"job-{s['job']}")), s["job"]
                )
            else:
                target = next(
                    (t.name for t in self.el.values() if (t.state_id or t.name) == s["name"]),
                    s["name"],
                )
            if not cron or interval in ("@once", "@manual", "@none"):
                lines.append(f"#   {s['name']} ({interval or 'no interval'}): run by hand: "
                             f"eltmake -C PROJECT build {target}{env_opt}")  # fmt: skip
            else:
                lines.append(f"#   {cron}  eltmake -C PROJECT build {target}{env_opt}"
                             f"   # {s['name']} ({interval})")  # fmt: skip
            if s.get("env"):
                lines.append(f"#     (the schedule's env {sorted(s['env'])} is not translated)")
        return "\n".join(lines) + "\n"


CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


# --- helpers ------------------------------------------------------------------------------------

_DROP = object()


def _is_dbt(plugin: Plugin) -> bool:
    """A dbt plugin: a dbt transformer, or a dbt utility (how Meltano ships dbt today)."""
    if plugin.type not in ("transformers", "utilities"):
        return False
    text = f"{plugin.base_name} {plugin.get('pip_url') or ''}"
    return plugin.base_name.startswith("dbt") and ("dbt-" in text or plugin.type == "transformers")


def _secret_settings(plugin: Plugin) -> set[str]:
    """Settings Meltano treats as secret: kind password/oauth, or marked sensitive."""
    out = set()
    for s in plugin.settings():
        name = s.get("name")
        if isinstance(name, str) and (s.get("kind") in SECRET_KINDS or s.get("sensitive") is True):
            out.add(name)
    return out


def _env_name(text: str) -> str:
    """Meltano's variable spelling: ``tap-gitlab`` → ``TAP_GITLAB``, ``a.b`` → ``A_B``."""
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


def _owner(plugin: Plugin, path: list[str]) -> str:
    """The plugin whose own config holds ``path``: a secret an inheriting plugin takes from its
    parent is read from the parent's variable, so one line of .env serves both."""
    p: Plugin | None = plugin
    while p is not None:
        node: Any = p.raw.get("config") or {}
        for part in path:
            node = node.get(part, _DROP) if isinstance(node, dict) else _DROP
        if node is not _DROP:
            return p.name
        p = p.parent
    return plugin.name


def _pipeline(extractor: Plugin) -> dict[str, str]:
    schema = extractor.get("load_schema") or extractor.namespace
    return {
        "MELTANO_EXTRACT__LOAD_SCHEMA": str(schema),
        "MELTANO_EXTRACTOR_NAMESPACE": extractor.namespace,
        "MELTANO_EXTRACT__NAMESPACE": extractor.namespace,
    }


def _uses_pipeline_vars(plugin: Plugin, project: MeltanoProject) -> bool:
    texts: list[str] = []

    def collect(v: Any) -> None:
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                collect(x)
        elif isinstance(v, list):
            for x in v:
                collect(x)

    collect(plugin.config)
    for s in plugin.settings():
        collect(s.get("value"))
    for env in project.data.get("environments") or []:
        for item in ((env.get("config") or {}).get("plugins") or {}).get("loaders") or []:
            if item.get("name") == plugin.name:
                collect(item.get("config"))
    return any(v in PIPELINE_VARS for t in texts for v in references(t))


def split_state_id(state_id: str, project: MeltanoProject) -> tuple[str, str, str] | None:
    """``ENV:TAP-to-TARGET[:SUFFIX]`` → (ENV, TAP, TARGET) when TAP and TARGET are plugins."""
    parts = state_id.split(":")
    if len(parts) not in (2, 3):
        return None
    env, pair = parts[0], parts[1]
    pieces = pair.split("-to-")
    for i in range(1, len(pieces)):
        tap, loader = "-to-".join(pieces[:i]), "-to-".join(pieces[i:])
        if tap in project.plugins["extractors"] and loader in project.plugins["loaders"]:
            return env, tap, loader
    return None


def _env_values(env: Any, where: str, tr: _Translator) -> dict[str, str]:
    """``env:`` mappings as strings (Meltano stringifies them too)."""
    out: dict[str, str] = {}
    for k, v in (env or {}).items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        out[str(k)] = str(v)
    return out


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: Meltano's setting names for nested values."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _diff(base: dict[str, Any], new: dict[str, Any], where: str, tr: _Translator) -> dict[str, Any]:
    """What ``new`` changes in ``base``, as an overlay eltmake deep-merges (it cannot remove a
    key, so a removal is noted)."""
    out: dict[str, Any] = {}
    for k, v in new.items():
        if k not in base:
            out[k] = v
        elif isinstance(v, dict) and isinstance(base[k], dict):
            sub = _diff(base[k], v, f"{where}.{k}", tr)
            if sub:
                out[k] = sub
        elif v != base[k]:
            out[k] = v
    for k in base:
        if k not in new:
            tr.note(f"{where}.{k}", "the environment removes this key; an eltmake overlay cannot")
    return out


def _no_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _no_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_no_nulls(x) for x in v if x is not None]
    return v


def _same_dbt(a: DbtTarget, b: DbtTarget) -> bool:
    return (a.transformer, a.command, a.select, a.exclude, a.full_refresh, a.vars, a.deps) == (
        b.transformer,
        b.command,
        b.select,
        b.exclude,
        b.full_refresh,
        b.vars,
        b.deps,
    )


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


__all__ = ["Note", "Translation", "split_state_id", "translate"]
