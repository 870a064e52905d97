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
from cncnn_cli.utils.textio import read_text_file

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
    """Load a recipe file with mmengine (``lazy_import=False``: docs/mmengine.md, 'Configs')."""
    from mmengine.config import Config

    path = resolve_recipe(recipe)
    if path.suffix == ".py":  # mmengine parses a temporary copy, and its errors name that copy
        _check_source(path)
    try:
        return Config.fromfile(str(path), lazy_import=False)
    except Exception as exc:
        raise CncnnError(f"recipe {path}: cannot be loaded ({type(exc).__name__}: {exc})") from None


def _check_source(path: Path, seen: frozenset[Path] = frozenset()) -> None:
    """Read ``path`` and the ``_base_`` recipes it names as UTF-8 Python, each failure one line naming its file.

    mmengine reads them with ``encoding='utf-8'`` and reports neither the file nor the position.
    """
    seen = seen | {path.resolve()}
    for base in _bases(_parse(path)):
        base_path = (path.parent / base).resolve()
        if base_path.suffix == ".py" and base_path.is_file() and base_path not in seen:
            _check_source(base_path, seen)


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(read_text_file(path, "recipe"), str(path))
    except SyntaxError as exc:
        raise CncnnError(f"recipe {path}:{exc.lineno}: syntax error: {exc.msg}") from None


def _bases(tree: ast.Module) -> list[str]:
    """The literal file names of a recipe's ``_base_ = ...`` (one name or a list of them)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            names = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
            return [name for name in names if isinstance(name, str)]
    return []


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe: its one-line description in ``cncnn recipes``."""
    for line in read_text_file(path, "recipe").splitlines():
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
