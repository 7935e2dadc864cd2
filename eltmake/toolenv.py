"""Tool environments: one isolated virtual environment per tool, installed from its ``pip_url``.

Generic on purpose (any plugin's tool uses it): a tool is a :class:`eltmake.step.ToolSpec`,
nothing more.

Choices, and why:

* One environment per tool, named ``<name>-<digest of pip_url and Python>``: tools pin
  conflicting versions of the same libraries (one tap needs singer-sdk, a target an old
  singer-python), and a changed ``pip_url`` or another Python lands in a new folder, so it
  reinstalls without touching the old one.
* ``$ELTMAKE_TOOLS_DIR`` replaces ``<project>/.eltmake/tools/`` when set: a shared cache, so test
  sessions and several projects reuse one install of the same ``pip_url``.
* uv (a dependency of eltmake) creates and fills environments; ``python -m venv`` + pip is the
  fallback. Packages are installed with byte-code compiled, because machines that set
  ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile a tap's imports on every start (a Singer
  SDK tap starts in 0.6 s instead of 1.7 s).
* The installed versions are written to ``eltmake-tool.json`` inside the environment when the
  install finishes, and that file is the commit point: an environment without it is incomplete
  and is rebuilt. :func:`tool_identity` is then one small file read, cheap enough for every
  no-op build.
* A file lock (``<env>.lock``) keeps two processes from installing the same environment at once;
  the second one waits and then finds the work done.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.errors import ConfigError, StepError, did_you_mean
from eltmake.files import write_atomic

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.step import ToolSpec

MARKER = "eltmake-tool.json"
TOOLS_DIR_ENV = "ELTMAKE_TOOLS_DIR"
TAIL_LINES = 15
MAX_PARALLEL_INSTALLS = 4


def tools_dir(project: Project) -> Path:
    """Where environments live: ``$ELTMAKE_TOOLS_DIR`` (a shared cache) or ``.eltmake/tools/``."""
    shared = project.environ.get(TOOLS_DIR_ENV) or os.environ.get(TOOLS_DIR_ENV)
    if shared:
        return Path(shared).expanduser().resolve()
    return project.state_dir / "tools"


def python_tag() -> str:
    """The interpreter a tool environment is made from: its version, ABI and base installation.
    Two projects on one Python share environments; another Python gets its own."""
    return f"{sys.implementation.cache_tag}-{os.uname().machine}-{sys.base_prefix}"


def pip_url_digest(pip_url: str) -> str:
    """A short digest of the requirement list (insensitive to spacing: ``a  b`` == ``a b``) and
    of the Python that runs the environment."""
    canonical = " ".join(shlex.split(pip_url)) + "\0" + python_tag()
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def declared_tools(project: Project) -> list[ToolSpec]:
    """Every tool the project's plugins declare (``eltmake_tools``), in one list."""
    return [s for specs in project.pm.hook.eltmake_tools(project=project) for s in specs or []]


def env_dir(project: Project, spec: ToolSpec) -> Path:
    """The environment folder of a tool with a ``pip_url``."""
    if not spec.pip_url:
        raise ValueError(f"tool {spec.name!r} has no pip_url, so it has no environment")
    return tools_dir(project) / f"{spec.name}-{pip_url_digest(spec.pip_url)}"


def _bin_dir(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin")


def _read_marker(env: Path) -> dict[str, Any] | None:
    try:
        return json.loads((env / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_installed(project: Project, spec: ToolSpec) -> bool:
    """True when the tool needs no install: its environment is complete, or it has no pip_url."""
    if not spec.pip_url:
        return True
    return _read_marker(env_dir(project, spec)) is not None


def _find_on_path(project: Project, executable: str) -> str | None:
    """An executable without an environment: on PATH, else next to the running Python (where
    the console scripts installed with eltmake and its plugins are, when eltmake runs as
    ``python -m eltmake`` without its environment's bin folder on PATH)."""
    if os.sep in executable:  # a path ("./tap.py"): from the project folder, wherever we run
        path = project.root / os.path.expanduser(executable)
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(executable, path=project.environ.get("PATH") or os.environ.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / executable
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None


def executable_path(project: Project, spec: ToolSpec) -> str:
    """The absolute path of the tool's executable.

    Raises :class:`StepError` when the tool is not installed yet (run ``eltmake install NAME``) or
    its executable cannot be found.
    """
    if not spec.pip_url:
        found = _find_on_path(project, spec.executable)
        if found is None:
            raise StepError(
                f"tool {spec.name!r}: executable {spec.executable!r} is not on PATH nor next to "
                f"{sys.executable}; install it, or give the tool a pip_url so eltmake installs it"
            )
        return found
    env = env_dir(project, spec)
    if _read_marker(env) is None:
        raise StepError(
            f"tool {spec.name!r} is not installed (no environment at {env}); "
            f"run `eltmake install {spec.name}`"
        )
    path = _bin_dir(env) / spec.executable
    if not path.exists():
        raise StepError(f"tool {spec.name!r}: {_missing_executable(env, spec)}")
    return str(path)


def _missing_executable(env: Path, spec: ToolSpec) -> str:
    scripts = sorted(
        p.name
        for p in _bin_dir(env).iterdir()
        if not p.name.startswith(("python", "activate", "pip", "deactivate", "pydoc"))
    )
    return (
        f"pip_url {spec.pip_url!r} installed no executable named {spec.executable!r}"
        f"{did_you_mean(spec.executable, scripts)}; set `executable` to one of: "
        f"{', '.join(scripts) or '(none)'}"
    )


def tool_identity(project: Project, spec: ToolSpec) -> dict[str, Any]:
    """What identifies the installed tool in a step's cache key.

    A tool with an environment: its pip_url, the versions installed and the Python that runs
    them (one small file read, cheap enough for every no-op build). A tool that ships with its
    plugin: the identity the plugin gives. Any other executable: the content of its file, so an
    upgrade in place re-runs its steps. A tool that is not installed yet gets an identity that
    says so (its steps must run anyway, and are keyed again once it is).
    """
    if spec.identity is not None:
        return dict(spec.identity)
    if not spec.pip_url:
        found = _find_on_path(project, spec.executable)
        if found is None:
            return {"executable": spec.executable, "missing": True}
        return {"executable": spec.executable, "file": _file_identity(found)}
    marker = _read_marker(env_dir(project, spec))
    if marker is None:
        return {"pip_url": spec.pip_url, "installed": False}
    ident = {"pip_url": spec.pip_url, "versions": marker.get("versions", {})}
    if marker.get("python_tag"):
        ident["python"] = marker["python_tag"]
    return ident


_FILE_IDS: dict[tuple, str] = {}
_BIG_FILE = 16 * 1024 * 1024


def _file_identity(path: str) -> str:
    """The digest of an executable's content (of its size and mtime when over 16 MB), memoised
    per process by its stat."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return "unreadable"
    sig = (real, st.st_size, st.st_mtime_ns, st.st_ino)
    known = _FILE_IDS.get(sig)
    if known is None:
        if st.st_size > _BIG_FILE:
            known = f"size {st.st_size} mtime {st.st_mtime_ns}"
        else:
            from eltmake.digest import file_digest

            try:
                known = file_digest(real)
            except OSError:
                known = "unreadable"
        _FILE_IDS[sig] = known
    return known


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_UV_LOCK = threading.Lock()
_UV_BIN: list[str | None] = []  # found once per process


def _uv_bin() -> str | None:
    """uv's executable, found once under a lock: installs run in threads, and the first call of
    ``uv.find_uv_bin`` initialises ``sysconfig``'s variables, which is not thread-safe (a second
    thread saw ``EXE`` as None and crashed the build)."""
    with _UV_LOCK:
        if not _UV_BIN:
            try:
                import uv

                _UV_BIN.append(uv.find_uv_bin())
            except (ImportError, FileNotFoundError):
                _UV_BIN.append(shutil.which("uv"))
        return _UV_BIN[0]


def _run(argv: list[str], name: str, what: str, env: dict[str, str]) -> str:
    """Run an installer command; on failure raise a StepError with its last lines."""
    from eltmake import procs

    proc = procs.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        tail = lines[-TAIL_LINES:]
        last = tail[-1].strip() if tail else "(no output)"
        raise StepError(
            f"installing tool {name!r} failed while {what} (exit code {proc.returncode}): {last}",
            tail=tail,
        )
    return proc.stdout


def _install(project: Project, spec: ToolSpec, env: Path) -> dict[str, Any]:
    """Create ``env`` afresh and install ``spec.pip_url`` into it; return the marker's content."""
    assert spec.pip_url
    if env.exists():
        # An unfinished environment (an install that was killed): set it aside first, so a
        # leftover writer cannot make the removal fail ("Directory not empty").
        aside = env.with_name(f".{env.name}.old-{os.getpid()}")
        os.replace(env, aside)
        shutil.rmtree(aside, ignore_errors=True)
    requirements = shlex.split(spec.pip_url)
    child_env = dict(os.environ)
    child_env.pop("VIRTUAL_ENV", None)  # install where we say, not into an activated venv
    python = _bin_dir(env) / "python"
    uv = _uv_bin()
    if uv:
        _run(
            [uv, "venv", "--quiet", "--python", sys.executable, str(env)],
            spec.name,
            "creating its environment",
            child_env,
        )
        _run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
                str(python),
                *requirements,
            ],
            spec.name,
            f"installing {spec.pip_url!r}",
            child_env,
        )
        freeze = _run(
            [uv, "pip", "freeze", "--python", str(python)], spec.name, "listing versions", child_env
        )
        installer = "uv"
    else:
        _run(
            [sys.executable, "-m", "venv", str(env)],
            spec.name,
            "creating its environment",
            child_env,
        )
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *requirements,
            ],
            spec.name,
            f"installing {spec.pip_url!r}",
            child_env,
        )
        freeze = _run(
            [str(python), "-m", "pip", "freeze"], spec.name, "listing versions", child_env
        )
        installer = "pip"
    versions: dict[str, str] = {}
    for line in freeze.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            versions[name.lower()] = version
        elif line.strip() and not line.startswith("#"):
            versions[line.strip()] = ""
    if not (_bin_dir(env) / spec.executable).exists():
        raise StepError(f"installing tool {spec.name!r}: {_missing_executable(env, spec)}")
    return {
        "name": spec.name,
        "pip_url": spec.pip_url,
        "executable": spec.executable,
        "python": sys.version.split()[0],
        "python_tag": python_tag(),
        "installer": installer,
        "installed_at": time.time(),
        "versions": versions,
    }


def _install_one(
    project: Project, spec: ToolSpec, force: bool, echo: Callable[[str], None]
) -> bool:
    """Install one tool unless done (by us or another process meanwhile). True when installed."""
    env = env_dir(project, spec)
    with _file_lock(env.with_name(env.name + ".lock")):
        if not force and _read_marker(env) is not None:
            return False
        echo(f"installing {spec.name} ({spec.pip_url}) ...")
        started = time.monotonic()
        marker = _install(project, spec, env)
        write_atomic(env / MARKER, json.dumps(marker, indent=1, sort_keys=True))
    main = marker["versions"]
    shown = (
        ", ".join(f"{k}=={v}" for k, v in main.items() if k in spec.pip_url.lower()) or spec.pip_url
    )
    echo(f"installed {spec.name} in {time.monotonic() - started:.1f}s: {shown}")
    return True


def ensure_installed(
    project: Project,
    specs: list[ToolSpec],
    names: list[str] | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Install the tools that are missing or whose ``pip_url`` changed; return the names installed.

    ``names`` limits the work to those tools (``eltmake install NAME...``); an unknown name is a
    :class:`ConfigError`. ``force`` reinstalls. Tools without a ``pip_url`` are checked to exist.
    Installs run in parallel; the first failure is raised as a :class:`StepError` naming the tool
    with the installer's last lines, after the others have finished.
    """
    by_name = {s.name: s for s in specs}
    if names:
        for name in names:
            if name not in by_name:
                raise ConfigError(
                    f"eltmake install: no tool named {name!r}{did_you_mean(name, by_name)}; "
                    f"tools: {', '.join(sorted(by_name)) or '(none)'}"
                )
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    else:
        chosen = list(by_name.values())
    todo: list[ToolSpec] = []
    for spec in chosen:
        if not spec.pip_url:
            executable_path(project, spec)  # raises a clear error when it cannot be found
        elif force or not is_installed(project, spec):
            todo.append(spec)
    if not todo:
        return []
    installed: list[str] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_INSTALLS, len(todo))) as pool:
        futures = [(s, pool.submit(_install_one, project, s, force, echo)) for s in todo]
        for spec, fut in futures:
            try:
                if fut.result():
                    installed.append(spec.name)
            except Exception as exc:  # collected: report after the other installs finish
                errors.append(exc)
    if errors:
        raise errors[0]
    return installed
