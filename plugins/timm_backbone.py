"""timm trunks (ConvNeXt, Swin, EfficientNet, RegNet, ...) as backbones: ``dict(type='timm', model=NAME)``.

timm's ``features_only`` mode returns one map per stage; the stages at strides 8, 16 and 32,
read from ``feature_info``, become S3, S4, S5, and ``feature_info`` also gives the channels
the fusion is built for. timm is an optional extra (``pip install "cncnn[timm]"``), imported
only when such a backbone is validated or built.

Pretrained weights come from the Hugging Face cache (downloaded there when online) or from a
local file. cncnn reads the file itself (safetensors, or ``torch.load(weights_only=True)``)
and hands timm the tensors, so timm still maps them onto the model and no file can run code.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.registry import BACKBONES
from cncnn_cli.weights.pretrained import load_state_file, load_url_state

STRIDES = (8, 16, 32)
INSTALL_HINT = 'timm backbones need the timm package: pip install "cncnn[timm]"'
#: timm's model fitting errors: bad model_kwargs, features_only unsupported, weights of another shape.
_BUILD_ERRORS = (RuntimeError, ValueError, TypeError, AssertionError, KeyError)


def import_timm() -> ModuleType:
    """timm, or a one-line install hint: the core runs without it."""
    try:
        import timm
    except ImportError:
        raise CncnnError(INSTALL_HINT) from None
    return timm


@BACKBONES.register_module(name="timm")
class TimmBackbone(nn.Module):
    """Any hierarchical timm model (model='convnext_base.fb_in22k'): S3/S4/S5 = its stride-8/16/32 stages."""

    strides = STRIDES

    def __init__(self, model: str, pretrained: bool | str | None = None, model_kwargs: dict | None = None) -> None:
        """``pretrained``: True = timm's weights for ``model`` (its tag picks them), a path = a weights
        file, None/False = from scratch. ``model_kwargs`` go to ``timm.create_model`` (Swin: img_size)."""
        super().__init__()
        timm = import_timm()
        self.check_config(dict(model=model), "backbone")
        kwargs = dict(model_kwargs or {})
        indices = stage_indices(timm, model, kwargs)
        overlay = dict(state_dict=pretrained_state(timm, model, pretrained)) if pretrained else None
        try:
            self.trunk = timm.create_model(model, pretrained=bool(pretrained), features_only=True,
                                           out_indices=indices, pretrained_cfg_overlay=overlay, **kwargs)
        except _BUILD_ERRORS as exc:  # the probe already built it: what fails here is the weights
            raise CncnnError(f"timm backbone {model}: pretrained weights '{pretrained}' do not fit it "
                             f"({first_line(exc)}). Give weights of a timm {model}.") from None
        self.out_channels = tuple(self.trunk.feature_info.channels())
        # Swin-like trunks give channels-last (NHWC) tensors; the fusion takes NCHW.
        self.nhwc = getattr(self.trunk, "output_fmt", "NCHW") == "NHWC"

    @classmethod
    def check_config(cls, cfg: dict, where: str) -> None:
        """Before anything is built: timm is installed and knows the model (and its weights tag)."""
        timm = import_timm()
        name = str(cfg.get("model"))
        arch, _, tag = name.partition(".")
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise CncnnError(f"{where}.model: timm has no model '{arch}'.{hint} "
                             f"`python -c \"import timm; print(timm.list_models('convnext*'))\"` lists them.")
        if tag and name not in timm.list_pretrained(f"{arch}.*"):
            tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
            raise CncnnError(f"{where}.model: timm has no weights tag '{tag}' for {arch}. Known: {tags}")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s3, s4, s5 = self.trunk(images)
        if self.nhwc:  # a permuted view: NCHW shape, channels-last memory, no copy
            s3, s4, s5 = (x.permute(0, 3, 1, 2) for x in (s3, s4, s5))
        return s3, s4, s5


def stage_indices(timm: ModuleType, model: str, kwargs: dict) -> list[int]:
    """``out_indices`` of the stages at strides 8, 16, 32 (the deepest one of each), from ``feature_info``.

    Read from a copy built on the meta device: no memory, no init, a fraction of a second.
    """
    try:
        with torch.device("meta"):
            probe = timm.create_model(model, pretrained=False, features_only=True, **kwargs)
    except _BUILD_ERRORS as exc:
        raise CncnnError(f"timm backbone {model}: cannot build it with features_only=True ({first_line(exc)})") \
            from None
    reductions = probe.feature_info.reduction()
    index_of = {reduction: index for index, reduction in enumerate(reductions)}
    if any(stride not in index_of for stride in STRIDES):
        raise CncnnError(
            f"timm backbone {model}: its stages have strides {', '.join(map(str, reductions))}, and CN-CNN needs "
            f"maps at strides 8, 16 and 32. Choose a hierarchical model (ResNet, ConvNeXt, Swin, EfficientNet, ...).")
    return [index_of[stride] for stride in STRIDES]


def pretrained_state(timm: ModuleType, model: str, pretrained: bool | str) -> dict[str, torch.Tensor]:
    """The weights ``pretrained`` names: a file, or (True) timm's file for ``model`` from the caches."""
    if pretrained is not True:
        path = Path(str(pretrained)).expanduser()
        if not path.is_file():
            raise CncnnError(f"timm backbone {model}: pretrained '{pretrained}' is not a file. Give a weights file "
                             f"(.safetensors, .pth), True for timm's weights of the model (a tag chooses them, "
                             f"e.g. convnext_base.fb_in22k), or --no-pretrained.")
        return load_state_file(path)
    cfg = timm.models.get_pretrained_cfg(model)
    if cfg is not None and cfg.hf_hub_id:
        return load_state_file(_hub_file(model, cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors"))
    if cfg is not None and cfg.url:
        return load_url_state(cfg.url, f"timm weights for {model}")
    raise CncnnError(f"timm has no pretrained weights for {model}: give a file (--pretrained PATH) or "
                     f"--no-pretrained. `timm.list_pretrained('{model.partition('.')[0]}.*')` lists its tags.")


def _hub_file(model: str, repo: str, filename: str) -> Path:
    """The file in the Hugging Face cache, downloaded there first when it is missing and the hub is reachable."""
    import huggingface_hub as hub

    cached = hub.try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached)
    try:
        return Path(hub.hf_hub_download(repo, filename))
    except Exception as exc:  # offline mode, refused or failed connections, a missing file: the hub raises many kinds
        raise CncnnError(
            f"timm weights for {model} are not in the Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}). Get https://huggingface.co/{repo}/resolve/main/{filename} and pass "
            f"--pretrained PATH (pretrained='PATH' in a recipe), or fill the cache {hub.constants.HF_HUB_CACHE} "
            f"(HF_HUB_CACHE or HF_HOME moves it) with `hf download {repo} {filename}`; "
            f"or --no-pretrained to train from scratch."
        ) from None

