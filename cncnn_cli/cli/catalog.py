"""``cncnn plugins``, ``cncnn recipes`` and ``cncnn info``: what is installed and available."""
from __future__ import annotations

import ast
import platform
from pathlib import Path

from rich.table import Table
from rich.text import Text

from cncnn_cli import __version__
from cncnn_cli.cli.common import PluginOption, out_console, setup
from cncnn_cli.config.recipes import bundled_dir, bundled_names, recipe_summary


def plugins(plugin: PluginOption = None) -> None:
    """List every registered plugin with a one-line description.

    Example: cncnn plugins --plugin my_backbone.py
    """
    setup(plugin)
    from cncnn_cli.registry import PLUGIN_REGISTRIES, describe

    table = Table(title="cncnn plugins")
    table.add_column("registry")
    table.add_column("name")
    table.add_column("description")
    for family, registry in PLUGIN_REGISTRIES.items():
        names = sorted(registry.module_dict)
        for index, name in enumerate(names):
            table.add_row(family if index == 0 else "", name, Text(describe(registry.module_dict[name])),
                          end_section=index == len(names) - 1)
    out_console.print(table)


def recipes() -> None:
    """List the bundled recipes (use a name or a path wherever RECIPE is asked).

    Example: cncnn recipes
    """
    table = Table(title=f"recipes in {bundled_dir()}")
    table.add_column("name")
    table.add_column("description")
    table.add_column("dataset (images, classes)")
    for name in bundled_names():
        path = bundled_dir() / f"{name}.py"
        table.add_row(name, recipe_summary(path), _dataset_summary(path))
    out_console.print(table)


def _dataset_summary(recipe: Path) -> str:
    """The name, sizes and classes of the dataset a recipe builds on: the first comment line of its
    ``_base_/datasets/`` file up to the closing parenthesis (``CUB-200-2011 (5,994 train / ..., 200 classes)``).

    Read from the files' text, not by loading the recipe: this listing must not import mmengine.
    """
    for base in _bases(recipe):
        path = (recipe.parent / base).resolve()
        if path.parent.name == "datasets" and path.parent.parent.name == "_base_" and path.is_file():
            line = recipe_summary(path)
            return line[:line.index(")") + 1] if "(" in line and ")" in line else line
    return ""


def _bases(recipe: Path) -> list[str]:
    """The file names of a recipe's literal ``_base_ = [...]`` (none when it is computed)."""
    for node in ast.parse(recipe.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "_base_" for target in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [value] if isinstance(value, str) else [name for name in value if isinstance(name, str)]
    return []


def info() -> None:
    """Versions of cncnn and its engine, and the devices torch can use.

    Example: cncnn info
    """
    import mmengine
    import torch
    import torchvision

    table = Table(title="cncnn info", show_header=False)
    table.add_column("key")
    table.add_column("value")
    rows = [
        ("cncnn", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("mmengine", mmengine.__version__),
        ("platform", platform.platform()),
        ("cpu threads", str(torch.get_num_threads())),
        ("cuda available", str(torch.cuda.is_available())),
        ("cuda (torch build)", str(torch.version.cuda)),
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            rows.append((f"cuda:{index}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
        rows.append(("bf16 supported", str(torch.cuda.is_bf16_supported())))
    try:
        cpu_bf16 = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        cpu_bf16 = "unknown"
    rows.append(("cpu capability", str(cpu_bf16)))
    for key, value in rows:
        table.add_row(key, value)
    out_console.print(table)
