"""One resolved, validated training config: recipe, then CLI flags, then ``--cfg-options``.

Validation (pydantic for the recipe's own keys, constructor signatures for plugin
options) runs before anything heavy starts; every problem is named with its dotted key,
what was expected and, for a typo, the closest valid key.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import inspect
from pathlib import Path
from typing import Any, Literal, Optional, Union

import mmengine.optim  # noqa: F401  (fills the optimizer and scheduler registries below)
import mmengine.visualization  # noqa: F401  (fills the VISBACKENDS registry below)
from mmengine.config import Config, DictAction
from mmengine.registry import OPTIMIZERS, PARAM_SCHEDULERS, VISBACKENDS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cncnn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, size_pair
from cncnn_cli.errors import CncnnError
from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.config.flags import FLAG_BY_NAME, FLAGS, Flag, check_either
from cncnn_cli.config.recipes import load_recipe
from cncnn_cli.config.trackers import BACKEND_TYPES, with_flags
from cncnn_cli.registry import ATTENTIONS, BACKBONES, DATASETS, FUSIONS, HEADS, MODELS, load_plugins, lookup
from cncnn_cli.weights.checkpoint import Positive

Size = Union[int, tuple[int, int]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Preprocess(_Strict):
    """resize → (random | center) crop; mean/std on the 0–255 scale. An int is a square size.
    std is positive, as in a checkpoint (:mod:`cncnn_cli.weights.checkpoint`); crop sides are
    positive multiples of the backbone's stride."""

    resize: Size
    crop: Size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[Positive, Positive, Positive] = IMAGENET_STD

    @field_validator("crop")
    @classmethod
    def _multiple_of_32(cls, crop: Size) -> Size:
        if any(side <= 0 or side % 32 for side in size_pair(crop)):
            raise ValueError("crop sides must be positive multiples of 32 (the backbone's stride), e.g. 448")
        return crop

    @model_validator(mode="after")
    def _resize_covers_crop(self) -> "Preprocess":
        resize, crop = size_pair(self.resize), size_pair(self.crop)
        if resize[0] < crop[0] or resize[1] < crop[1]:
            raise ValueError(f"resize {self.resize} is smaller than crop {self.crop}")
        return self


class TrainLoop(_Strict):
    by_epoch: Literal[True] = True
    max_epochs: int = Field(gt=0)
    val_interval: int = Field(default=1, gt=0)


class AutoScaleLr(_Strict):
    """Linear learning-rate scaling (mmengine's): lr × effective batch / ``base_batch_size``.

    ``base_batch_size`` is the total batch the recipe's learning rates were set for; the
    effective batch is per-device batch × processes × accumulation steps.
    """

    enable: bool = True
    base_batch_size: int = Field(default=16, gt=0)


class Optimizer(BaseModel):
    """The values of ``optim_wrapper.optimizer`` that can be impossible; its keys are checked against
    the optimizer's constructor (:func:`validate_optimization`)."""

    model_config = ConfigDict(extra="allow")
    type: str
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)


class Multipliers(_Strict):
    """Per-parameter-group factors of ``paramwise_cfg.custom_keys`` (mmengine's)."""

    lr_mult: float = Field(default=1.0, ge=0.0)
    decay_mult: float = Field(default=1.0, ge=0.0)


class Paramwise(BaseModel):
    model_config = ConfigDict(extra="allow")
    custom_keys: dict[str, Multipliers] = {}


class OptimWrapperConfig(_Strict):
    """``optim_wrapper``: mmengine's optimizer wrapper and the optimizer inside it."""

    type: str = "OptimWrapper"
    optimizer: Optimizer
    paramwise_cfg: Paramwise = Paramwise()
    clip_grad: Optional[dict] = None
    accumulative_counts: int = Field(default=1, gt=0)

    @field_validator("type")
    @classmethod
    def _plain_wrapper(cls, kind: str) -> str:
        if kind != "OptimWrapper":
            raise ValueError("only 'OptimWrapper': mixed precision is --amp (amp=True), which picks the wrapper "
                             "for the device")
        return kind


class VisBackend(BaseModel):
    """One ``vis_backends`` entry: an mmengine visualization backend and its options, e.g.
    ``dict(type='MLflowVisBackend', tracking_uri='http://mlflow:5000', exp_name='cub')``; the options
    are checked against the backend's constructor (:func:`validate`)."""

    model_config = ConfigDict(extra="allow")
    type: Literal[BACKEND_TYPES]


class Recipe(_Strict):
    """Every key a recipe may hold (besides mmengine's ``_base_``)."""

    model: dict
    dataset: dict
    preprocess: Preprocess
    optim_wrapper: OptimWrapperConfig
    param_scheduler: list[dict] = []
    train_cfg: TrainLoop
    batch_size: int = Field(gt=0)
    workers: int = Field(default=DEFAULT_WORKERS, ge=0)
    seed: int = 0
    amp: bool = False
    #: CUDA's fp32 matmuls and convolutions: "high" allows TF32, "highest" keeps full fp32.
    fp32_precision: Literal["high", "highest"] = "high"
    device: str = "auto"
    launcher: Literal["none", "pytorch", "slurm"] = "none"
    sync_bn: bool = False
    #: torch.compile the model's forward (--compile; cncnn_cli/models/compile.py).
    compile: bool = False
    #: Decode JPEGs, resize and crop on the model's device; the loader workers read files
    #: (--gpu-decode; cncnn_cli/data/gpu_decode.py).
    gpu_decode: bool = False
    #: Also leave-one-out Recall@K and MAP@R of the default embedding at every evaluation, into
    #: metrics.json and the trackers (--retrieval; docs/beyond-top1.md).
    retrieval: bool = False
    log_interval: int = Field(default=10, gt=0)
    work_dir: Optional[str] = None
    custom_hooks: list[dict] = []
    #: Experiment trackers (mmengine backend configs); ``--vis-backend NAME`` adds one.
    vis_backends: list[VisBackend] = []
    auto_scale_lr: AutoScaleLr = AutoScaleLr()
    accumulate: int = Field(default=1, gt=0)
    effective_batch: Optional[int] = Field(default=None, gt=0)
    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    val_split: Optional[Literal["val"]] = None
    #: Largest image (pixels) the datasets decode; None keeps PIL's decompression-bomb guard.
    max_pixels: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_way_each(self) -> "Recipe":
        if self.val_fraction and self.val_split:
            raise ValueError("give either val_fraction (--val-fraction) or val_split (--val-split), not both")
        if self.accumulate > 1 and self.effective_batch:
            raise ValueError("give either accumulate (--accumulate) or effective_batch (--effective-batch), "
                             "not both")
        return self


#: mmengine's own parser of ``--cfg-options`` values, used through its public argparse interface.
_DICT_ACTION = argparse.ArgumentParser(add_help=False)
_DICT_ACTION.add_argument("--cfg-options", nargs="+", action=DictAction)


def parse_cfg_options(options: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs, each value parsed as mmengine's ``DictAction`` parses it.

    So ``a=1,2`` and ``a=[1,2]`` are lists, ``a=(1,2)`` a tuple, ``true``/``false`` booleans,
    ``None`` None, numbers numbers, anything else a string. Beyond DictAction, a value holding a
    dict (``custom_hooks=[{'type': 'X'}]``) or in quotes (``work_dir='my runs'``) is read as the
    Python literal it is, which DictAction cannot express.
    """
    parsed: dict[str, Any] = {}
    for option in options or []:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise CncnnError(f"--cfg-options {option!r}: expected key=value, e.g. train_cfg.max_epochs=10")
        parsed[key] = _parse_value(option, raw.strip())
    return parsed


def _parse_value(option: str, raw: str) -> Any:
    if "{" in raw or raw[:1] in ("'", '"'):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            pass
    try:
        return _DICT_ACTION.parse_args(["--cfg-options", f"value={raw}"]).cfg_options["value"]
    except AssertionError:  # DictAction's check for unbalanced brackets
        raise CncnnError(f"--cfg-options {option!r}: unbalanced brackets in the value") from None


def apply_flags(cfg: Config, flags: dict[str, Any]) -> None:
    """Apply the training flags given (:data:`~cncnn_cli.config.flags.FLAGS` by name) to the recipe
    config, in place. ``pretrained=None`` is given: train from scratch, as ``--no-pretrained``;
    ``pretrained="recipe"`` keeps the recipe's weights."""
    check_either(flags)
    for flag in FLAGS:
        if flag.name not in flags:
            continue
        partner = FLAG_BY_NAME.get(flag.either or "")
        if partner and partner.key != flag.key:  # the recipe's other way is off now
            _set(cfg, partner.key, partner.off)
        _APPLY.get(flag.name, _set_flag)(cfg, flag, flags[flag.name])


def _set_flag(cfg: Config, flag: Flag, value: Any) -> None:
    _set(cfg, flag.key, True if flag.switch else str(value) if flag.type is Path else value)


def _set_dataset(cfg: Config, flag: Flag, name: str) -> None:
    """Another dataset plugin starts from its own defaults; the recipe's data root stays."""
    if name != cfg.dataset.get("type"):
        cfg.dataset = {"type": name, "data_root": cfg.dataset.get("data_root")}


def _set_backbone(cfg: Config, flag: Flag, name: str) -> None:
    cfg.model["backbone"] = backbone_from_flag(cfg.model.get("backbone"), name)


def _set_pretrained(cfg: Config, flag: Flag, weights: str | None) -> None:
    if weights != "recipe" and isinstance(cfg.model.get("backbone"), dict):
        cfg.model["backbone"]["pretrained"] = weights


def _set_no_pretrained(cfg: Config, flag: Flag, on: bool) -> None:
    _set_pretrained(cfg, flag, None)


def _set_image_size(cfg: Config, flag: Flag, size: int) -> None:
    """The crop becomes ``size``; the resize scales with it."""
    crop = cfg.preprocess["crop"]
    scale = size / (crop if isinstance(crop, int) else crop[0])
    resize = cfg.preprocess["resize"]
    cfg.preprocess["resize"] = round(resize * scale) if isinstance(resize, int) else [round(s * scale) for s in resize]
    cfg.preprocess["crop"] = size


def _set_no_scale_lr(cfg: Config, flag: Flag, on: bool) -> None:
    _set(cfg, flag.key, False)


def _set_vis_backend(cfg: Config, flag: Flag, names: list[str]) -> None:
    cfg.vis_backends = with_flags(cfg.get("vis_backends", []), names)


#: The flags that do more than put their value at their key.
_APPLY = {"dataset": _set_dataset, "backbone": _set_backbone, "pretrained": _set_pretrained,
          "no_pretrained": _set_no_pretrained, "image_size": _set_image_size, "no_scale_lr": _set_no_scale_lr,
          "vis_backend": _set_vis_backend}


#: The torchvision weights a recipe's pretrained timm trunk becomes under ``--backbone NAME`` (the paper's).
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"


def backbone_from_flag(current: dict | None, flag: str) -> dict:
    """``--backbone NAME`` (a registered backbone) or ``--backbone timm:NAME`` (any timm model).

    Whether the recipe's trunk was pretrained carries over, not the value itself: a torchvision
    weights name means nothing to timm (True picks timm's weights for the model), nor a timm one
    to torchvision. ``--pretrained`` / ``--no-pretrained`` still decide afterwards.
    """
    current = dict(current or {})
    wanted = bool(current.get("pretrained"))
    prefix, sep, name = flag.partition(":")
    if sep and prefix == "timm":
        if not name:
            raise CncnnError("--backbone timm:NAME needs a timm model name, e.g. timm:convnext_tiny")
        return {"type": "timm", "model": name, "pretrained": True if wanted else None}
    if current.get("type") == "timm":
        return {"type": flag, "pretrained": TORCHVISION_WEIGHTS if wanted else None}
    return {**current, "type": flag}


def _set(cfg: Config, key: str, value: Any) -> None:
    """``cfg[a][b][c] = value`` for the dotted ``key`` ``a.b.c``; a missing section becomes a dict."""
    *path, last = key.split(".")
    node = cfg
    for part in path:
        if part not in node:
            node[part] = {}
        node = node[part]
    node[last] = value


def resolve_config(recipe: str | Path, flags: dict[str, Any] | None = None,
                   cfg_options: list[str] | None = None) -> Config:
    """Load, override, validate and derive; returns the config every later step uses.

    Reads no environment: the same recipe and flags give the same config on every machine."""
    load_plugins()
    cfg = load_recipe(recipe)
    apply_flags(cfg, flags or {})
    options = parse_cfg_options(cfg_options)
    if options:
        try:
            cfg.merge_from_dict(options)
        except Exception as exc:
            raise CncnnError(f"--cfg-options: {exc}") from None
    given = {flag.key: flag.option for flag in FLAGS if flag.name in (flags or {})}
    validate(cfg, overrides=tuple(options), flags=given)
    derive(cfg)
    return cfg


def validate(cfg: Config, overrides: tuple[str, ...] = (), flags: dict[str, str] | None = None) -> None:
    """Check every key and value. An error blames what set the value: a ``--cfg-options`` key of
    ``overrides`` (applied last), else the flag ``flags`` names for its key, else the recipe."""
    data = {k: v for k, v in cfg.to_dict().items() if k != "_base_"}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise CncnnError(_explain(exc, cfg.filename, overrides, flags or {})) from None
    for name in Recipe.model_fields:  # fill in the defaults of optional keys
        if name not in cfg:
            cfg[name] = getattr(recipe, name)
    # sections a recipe may give in part (e.g. only base_batch_size, only max_epochs) get their defaults
    cfg.auto_scale_lr = recipe.auto_scale_lr.model_dump()
    cfg.train_cfg = recipe.train_cfg.model_dump()
    cfg.preprocess = recipe.preprocess.model_dump()
    validate_model(cfg.model)
    _check_part(DATASETS, cfg.dataset, "dataset", auto=("split", "transform"))
    _check_part(OPTIMIZERS, cfg.optim_wrapper["optimizer"], "optim_wrapper.optimizer", auto=("params",))
    for index, backend in enumerate(cfg.vis_backends):
        _check_part(VISBACKENDS, backend, f"vis_backends.{index}", auto=("save_dir", "name"))


def validate_schedulers(cfg: Config) -> None:
    """Each ``param_scheduler`` entry names a known scheduler with options it takes (after
    :func:`derive` filled in the epoch range)."""
    for index, scheduler in enumerate(cfg.param_scheduler):
        options = {k: v for k, v in scheduler.items() if k != "convert_to_iter_based"}
        _check_part(PARAM_SCHEDULERS, options, f"param_scheduler.{index}", auto=("optimizer", "param_name"))


def validate_model(model: dict, prefix: str = "model") -> None:
    """Check a model config's types and options against the registered constructors."""
    auto = ("data_preprocessor",)
    _check_part(MODELS, model, prefix, auto=auto, nested=("backbone", "fusion", "attention", "head"))
    for key, registry, provided in (
        ("backbone", BACKBONES, ()), ("fusion", FUSIONS, ("in_channels",)),
        ("attention", ATTENTIONS, ("channels",)), ("head", HEADS, ("channels", "num_classes")),
    ):
        if key in model:
            if not isinstance(model[key], dict):
                raise CncnnError(f"{prefix}.{key}: expected a dict with a 'type', got {model[key]!r}")
            _check_part(registry, model[key], f"{prefix}.{key}", auto=provided)


def _check_part(registry, part: dict, where: str, auto: tuple[str, ...] = (), nested: tuple[str, ...] = ()) -> None:
    kind = part.get("type")
    target = lookup(registry, kind, f"{where}.type")
    params = _constructor_parameters(target)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = list(dict.fromkeys([name for name in params if name not in auto] + list(nested)))
    for key in part:
        if key == "type" or key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise CncnnError(f"{where}.{key}: not an option of {registry.name} '{kind}'.{hint} "
                         f"Valid: {', '.join(valid) or 'none'}")
    missing = [name for name, p in params.items()
               if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and name not in auto
               and name not in part and name != "self"]
    if missing:
        raise CncnnError(f"{where}: {registry.name} '{kind}' needs {', '.join(missing)}")
    check = getattr(target, "check_config", None)  # a part's own checks of its values (timm: the model name)
    if callable(check):
        check(part, where)


def _constructor_parameters(target) -> dict[str, inspect.Parameter]:
    """The parameters ``target(...)`` takes; for classes whose ``__init__`` is wrapped as
    ``(*args, **kwargs)`` (mmengine's learning-rate schedulers), those of the first class in
    its MRO that spells them out."""
    if inspect.isclass(target):
        for cls in target.__mro__:
            init = cls.__dict__.get("__init__")
            if init is None:
                continue
            params = dict(inspect.signature(init).parameters)
            if not any(p.kind is p.VAR_POSITIONAL for p in params.values()):
                params.pop("self", None)
                return params
    return dict(inspect.signature(target).parameters)


#: The names pydantic adds to an error's location for the member of a union that failed (``crop.int``).
_UNION_MEMBERS = {"int", "float", "str", "bool", "tuple", "list", "dict", "none"}


def _explain(exc: ValidationError, filename: str | None, overrides: tuple[str, ...] = (),
             flags: dict[str, str] | None = None) -> str:
    error = exc.errors()[0]
    loc = list(error["loc"])
    while loc and isinstance(loc[-1], str) and loc[-1].split("[")[0] in _UNION_MEMBERS:
        loc.pop()
    location = ".".join(str(part) for part in loc)
    def covers(key: str) -> bool:
        return location == key or location.startswith(f"{key}.") or key.startswith(f"{location}.")

    given = [key for key in overrides if covers(key)]
    flag = next((name for key, name in (flags or {}).items() if covers(key)), None)
    source = (f" (--cfg-options {given[0]})" if given else f" ({flag})" if flag
              else f" (recipe {filename})" if filename else "")
    if error["type"] == "extra_forbidden":
        parent = _fields_at(error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), parent, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"{location}: unknown key{source}.{hint} Valid keys here: {', '.join(parent)}"
    if error["type"] == "missing":
        return f"{location}: required key missing{source}"
    got = error.get("input")
    return f"{location}: {error['msg']}{source} (got {got!r})"


def _fields_at(loc: tuple) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def derive(cfg: Config) -> None:
    """Values that follow from others, computed after every override (docs/mmengine.md, 'Configs').

    Only from the config itself: what depends on the machine and the environment (processes,
    device, SyncBN, the trackers' packages and URIs) is the engine's run plan
    (``cncnn_cli/engine/plan.py``), so the config saved with a run is the user's."""
    epochs = cfg.train_cfg["max_epochs"]
    for scheduler in cfg.param_scheduler:
        if scheduler.get("by_epoch", True):
            scheduler.setdefault("begin", 0)
            scheduler.setdefault("end", epochs)
            if scheduler.get("type") in ("CosineAnnealingLR", "CosineAnnealingParamScheduler"):
                scheduler.setdefault("T_max", scheduler["end"] - scheduler["begin"])
    validate_schedulers(cfg)
