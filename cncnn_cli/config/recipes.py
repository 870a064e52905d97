"""Finding and loading recipes (old-style mmengine config files) by path or by name.

Bundled recipes live in ``recipes/`` (installed as the package data ``cncnn_recipes``), so
``cncnn train cub`` works after a non-editable install too. Old-style relative ``_base_``
lists are used because mmengine 0.10.7's ``read_base``/``pkg::`` paths need ``pkg_resources``.
"""
from __future__ import annotations

import ast
import difflib
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cncnn_cli.errors import CncnnError

if TYPE_CHECKING:
    from mmengine.config import Config


def bundled_dir() -> Path:
    """The folder of bundled recipes (the source tree's ``recipes/`` or the installed copy)."""
    return Path(str(files("cncnn_recipes")))


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.py") if not p.name.startswith("_"))


def resolve_recipe(recipe: str | Path) -> Path:
    """A path to an existing .py file, or the name of a bundled recipe."""
    path = Path(recipe)
    if path.is_file():
        return path
    if path.suffix == ".py" and not path.is_file() and path.parent != Path("."):
        raise CncnnError(f"recipe {recipe}: no such file")
    candidate = bundled_dir() / f"{path.stem}.py"
    if candidate.is_file() and not path.stem.startswith("_"):
        return candidate
    names = bundled_names()
    close = difflib.get_close_matches(path.stem, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise CncnnError(f"recipe '{recipe}' is neither a file nor a bundled recipe ({', '.join(names)}).{hint}")


def load_recipe(recipe: str | Path) -> "Config":
    """Load a recipe file with mmengine (``lazy_import=False``: see MMENGINE-NOTES.md)."""
    from mmengine.config import Config

    path = resolve_recipe(recipe)
    if path.suffix == ".py":  # mmengine parses a temporary copy, and its syntax errors name that copy
        try:
            ast.parse(path.read_text(encoding="utf-8"), str(path))
        except SyntaxError as exc:
            raise CncnnError(f"recipe {path}:{exc.lineno}: syntax error: {exc.msg}") from None
    try:
        return Config.fromfile(str(path), lazy_import=False)
    except Exception as exc:
        raise CncnnError(f"recipe {path}: cannot be loaded ({type(exc).__name__}: {exc})") from None


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe: its one-line description in ``cncnn recipes``."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def dataset_from_recipe(recipe: str | Path) -> dict[str, Any]:
    """The ``dataset = dict(type=..., data_root=..., ...)`` entry of a recipe (a file or a bundled name)."""
    config = load_recipe(recipe)
    dataset = config.get("dataset")
    if not isinstance(dataset, dict) or "type" not in dataset:
        raise CncnnError(f"recipe {recipe} has no `dataset = dict(type=..., data_root=...)` entry")
    return dict(dataset)
