"""``eltmake init``: a starter project, as a plugin provides it (``eltmake_starter_project``).

The core writes the files and keeps what is there: an existing file is never overwritten, and
``.gitignore`` lines are merged into an existing ``.gitignore`` (a repository keeps its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eltmake.errors import ConfigError

# What every project should keep out of version control, whatever its plugins.
IGNORE = [".eltmake/", ".env"]
MINIMAL = """[project]
name = "{name}"

[targets.hello]
run = "echo hello"
"""


def init_project(directory: str, name: str | None, pm: Any) -> int:
    root = Path(directory).resolve()
    if (root / "eltmake.toml").exists():
        raise ConfigError(f"{root / 'eltmake.toml'} already exists; init writes a new project only")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file; name a folder for the new project")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder {root}: {e.strerror}") from None
    project_name = name or root.name
    files = dict(pm.hook.eltmake_starter_project(name=project_name) or {})
    files.setdefault("eltmake.toml", MINIMAL.format(name=project_name))
    ignore = IGNORE + [line for line in files.pop(".gitignore", "").splitlines() if line.strip()]
    for rel, text in files.items():
        path = root / rel
        if path.exists():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror}") from None
        print(f"created {rel}")
    added = merge_gitignore(root / ".gitignore", ignore)
    if added:
        print(f"added {', '.join(added)} to .gitignore")
    print(f"\nnext: cd {directory} && eltmake build")
    return 0


def merge_gitignore(path: Path, lines: list[str]) -> list[str]:
    """Append the lines ``path`` lacks (created if absent); return those appended."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    have = {line.strip() for line in text.splitlines()}
    missing = [line for line in dict.fromkeys(lines) if line.strip() not in have]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        try:
            path.write_text(text + sep + "\n".join(missing) + "\n", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror}") from None
    return missing
