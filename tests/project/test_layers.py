"""The import directions of docs/plugins.md, "Import directions", read from every module's AST.

CLI → apis → engine → config, evaluation → models, data, weights, visualization → registry,
errors, utils. Config is below the engine: a recipe, once it reaches the engine, never goes back
to config, and resolving a config loads nothing of the engine. Plugins use the registry and the core's base APIs only. Nothing imports upward,
the core never imports a built-in plugin (parts come by name through the registry), and the
model never reads optimizer internals.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Package (or module) → layer; a module may import its own layer and those below.
LAYERS = {
    "cncnn_cli": 0, "cncnn_cli.errors": 0, "cncnn_cli.registry": 0, "cncnn_cli.utils": 0,
    "cncnn_cli.models": 1, "cncnn_cli.data": 1, "cncnn_cli.weights": 1, "cncnn_cli.visualization": 1,
    "cncnn_cli.deploy": 1,  # torch-free inference of exported models: data.images, numpy, onnxruntime
    "cncnn_cli.config": 2, "cncnn_cli.evaluation": 2,
    "cncnn_cli.engine": 3,
    "cncnn_cli.apis": 4,
    "cncnn_cli.cli": 5, "cncnn_cli.__main__": 5,
}
#: The highest core layer a plugin may import: the base APIs (registry, models, data, weights).
PLUGIN_CEILING = 1


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in (("cncnn_cli", "cncnn_cli"), ("plugins", "cncnn_plugins")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in names if name.split(".")[0] in ("cncnn_cli", "cncnn_plugins")}


def _layer(name: str) -> int | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    return None


def test_every_core_module_has_a_layer():
    modules = [m for m in _modules() if m.startswith("cncnn_cli")]
    assert [m for m in modules if _layer(m) is None] == []


def test_imports_point_down_and_the_core_never_imports_a_plugin():
    known = _modules()
    wrong = []
    for module, path in known.items():
        own = _layer(module) if module.startswith("cncnn_cli") else PLUGIN_CEILING
        for name in _imports(path, module):
            if name.startswith("cncnn_plugins"):
                if module.startswith("cncnn_cli"):
                    wrong.append(f"{module} imports the built-in plugin {name}")
                continue
            target = _layer(name)
            if name in known or name.rpartition(".")[0] in known or target is not None:
                if target is not None and target > own:
                    wrong.append(f"{module} (layer {own}) imports {name} (layer {target})")
    assert wrong == []


def test_the_rule_catches_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("from cncnn_cli.cli.common import err_console\nimport cncnn_plugins.fusions\n")
    names = _imports(module, "cncnn_cli.engine.bad")
    assert "cncnn_cli.cli.common" in names and "cncnn_plugins.fusions" in names
    assert _layer("cncnn_cli.cli.common") > _layer("cncnn_cli.engine.bad")


def test_resolving_a_config_loads_nothing_of_the_engine():
    """Indirect imports too (through a third package), which the AST rule above cannot follow."""
    code = "import cncnn_cli.config.resolve, sys; print([m for m in sys.modules if m.startswith('cncnn_cli.engine')])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_models_never_read_optimizer_internals():
    for folder in (ROOT / "cncnn_cli" / "models", ROOT / "plugins"):
        for path in folder.rglob("*.py"):
            text = path.read_text()
            assert "_accumulative_counts" not in text and "optim_wrapper" not in text, path


def test_each_default_is_written_once():
    """ImageNet normalization lives in data/transforms.py, the released preprocessing sizes in
    recipes/_base_/datasets/, the paper model's widths in recipes/_base_/models/."""
    sources = [p for folder in ("cncnn_cli", "plugins", "recipes") for p in (ROOT / folder).rglob("*.py")]
    for literal in ("123.675", "58.395", "resize=600", "resize=512", "hidden=512"):
        holders = [p.relative_to(ROOT).as_posix() for p in sources if literal in p.read_text()]
        assert len(holders) == 1, (literal, holders)
