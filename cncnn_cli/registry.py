"""mmengine registries for every swappable part, and plugin discovery.

The registries are children of mmengine's roots (scope ``cncnn``), so an mmengine
``Runner`` built with ``default_scope='cncnn'`` finds our models and datasets.
Built-in plugins live in ``plugins/`` (installed as ``cncnn_plugins``); third-party
packages register through the entry-point group ``cncnn.plugins``; a single file
through ``--plugin path.py``.
"""
from __future__ import annotations

import difflib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

from cncnn_cli.errors import CncnnError, first_line

SCOPE = "cncnn"
# ``locations`` (as in mmpretrain's registry.py): the modules that fill each registry, imported on
# first use. The core's own models register from ``cncnn_cli.models.classifier``; the swappable parts are the
# built-in plugins, which the core reaches only through these names.
MODELS = Registry("model", parent=MMENGINE_MODELS, scope=SCOPE, locations=["cncnn_cli.models.classifier", "cncnn_plugins.baseline"])
# mmengine allows one child per scope under a parent, so the parts get scopes of their own.
BACKBONES = Registry("backbone", parent=MMENGINE_MODELS, scope=f"{SCOPE}_backbones",
                     locations=["cncnn_plugins.backbones", "cncnn_plugins.timm_backbone"])
FUSIONS = Registry("fusion", parent=MMENGINE_MODELS, scope=f"{SCOPE}_fusions",
                   locations=["cncnn_plugins.fusions", "cncnn_plugins.official_formulation"])
ATTENTIONS = Registry("attention", parent=MMENGINE_MODELS, scope=f"{SCOPE}_attentions",
                      locations=["cncnn_plugins.attentions"])
HEADS = Registry("head", parent=MMENGINE_MODELS, scope=f"{SCOPE}_heads", locations=["cncnn_plugins.heads"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE, locations=["cncnn_plugins.datasets"])

#: Registries shown by ``cncnn plugins``, in pipeline order.
PLUGIN_REGISTRIES: dict[str, Registry] = {
    "backbones": BACKBONES,
    "fusions": FUSIONS,
    "attentions": ATTENTIONS,
    "heads": HEADS,
    "models": MODELS,
    "datasets": DATASETS,
}
ENTRY_POINT_GROUP = "cncnn.plugins"

_loaded_files: set[Path] = set()
_builtins_loaded = False


def load_plugins(files: list[Path] | tuple[Path, ...] = ()) -> None:
    """Register the built-ins, every installed entry point and the given plugin files.

    Safe to call more than once: each source is imported once per process.
    """
    global _builtins_loaded
    if not _builtins_loaded:
        for registry in PLUGIN_REGISTRIES.values():
            registry.import_from_location()
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others
                raise CncnnError(
                    f"plugin entry point '{entry.name}' ({entry.value}) failed to load: {exc}. "
                    f"Fix or uninstall the package that provides it."
                ) from exc
        _builtins_loaded = True
    for file in files:
        _load_plugin_file(Path(file))


def _load_plugin_file(path: Path) -> None:
    path = path.expanduser().resolve()
    if path in _loaded_files:
        return
    if not path.is_file() or path.suffix != ".py":
        raise CncnnError(f"--plugin {path}: expected an existing Python file (*.py) that registers plugins.")
    module_name = f"cncnn_user_plugin_{len(_loaded_files)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise CncnnError(f"--plugin {path} failed to import: {type(exc).__name__}: {exc}") from exc
    _loaded_files.add(path)


def describe(obj: object) -> str:
    """First line of a plugin's docstring: its one-line description in ``cncnn plugins``."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


def lookup(registry: Registry, kind: object, where: str) -> type:
    """The class registered as ``kind``, or a one-line error naming ``where``, the closest
    registered name and all of them."""
    target = registry.get(kind) if isinstance(kind, str) else None
    if target is None:
        names = sorted(registry.module_dict)
        close = difflib.get_close_matches(str(kind), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise CncnnError(f"{where}: unknown {registry.name} '{kind}'.{hint} Available: {', '.join(names) or 'none'} "
                         f"(`cncnn plugins` lists them)")
    return target


def build_from(registry: Registry, cfg: dict, what: str, **defaults):
    """Build ``cfg`` from ``registry`` with a clear error when its type is unknown.

    The class is looked up in ``registry`` itself and called directly (kept instead of
    ``Registry.build``, which follows the process-wide default scope a Runner sets).
    """
    params = dict(cfg)
    kind = params.pop("type", None)
    target = lookup(registry, kind, what)
    for key, value in defaults.items():
        params.setdefault(key, value)
    try:
        return target(**params)
    except _BAD_OPTION_ERRORS as exc:
        given = ", ".join(f"{key}={value!r}" for key, value in cfg.items() if key != "type") or "no options"
        raise CncnnError(f"{what} '{kind}' cannot be built from {given}: {type(exc).__name__}: "
                         f"{first_line(exc)}. Check the values in the recipe or --cfg-options") from exc


#: What a plugin's constructor raises for an option of the wrong type or value (a string for a
#: channel count, a negative size, a zero divisor), as opposed to a missing file or a bug.
_BAD_OPTION_ERRORS = (TypeError, ValueError, ZeroDivisionError, RuntimeError, OverflowError)
