"""Importing the authors' released checkpoints (docs/model.md, "The authors' checkpoints").

Their file is a pickled dict of tensors; it is read with ``torch.load(weights_only=True)``
only. K, D, C, the channel-attention reduction and the backbone architecture are inferred
from tensor shapes. Their ConvLSTM convolution already has our layout (input channels
x then h; output gates i, f, o, g), so it maps one to one.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from cncnn_cli.weights.checkpoint import Checkpoint, load_weights, save_checkpoint
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.textio import read_text_file
from cncnn_cli.models.classifier import build_model
from cncnn_cli.weights.pretrained import load_state_file
from cncnn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD

#: Official key prefix → our key prefix, tried in order.
KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^(conv1|bn1|layer[1-4])\.", r"backbone.\1."),
    (r"^fpn\.F5_1\.conv_master\.", "fusion.laterals.fpa5.master."),
    (r"^fpn\.F5_1\.conv_gpb\.", "fusion.laterals.fpa5.pooled."),
    (r"^fpn\.F4_1\.", "fusion.laterals.lateral4."),
    (r"^fpn\.F3_1\.", "fusion.laterals.lateral3."),
    (r"^fpn\.convlstm\.cell_list\.0\.conv\.", "fusion.convlstm.conv."),
    (r"^apn\.A3_1\.conv\.", "attention.spatial.0."),
    (r"^apn\.A4_1\.conv\.", "attention.spatial.1."),
    (r"^apn\.A5_1\.conv\.", "attention.spatial.2."),
    (r"^apn\.A3_2\.", "attention.channel.0."),
    (r"^apn\.A4_2\.", "attention.channel.1."),
    (r"^apn\.A5_2\.", "attention.channel.2."),
    (r"^cls([345])\.", r"head.cls\1."),
    (r"^cls_concate\.", "head.concat."),
)
#: The released training configs' test preprocessing, by recipe name.
def map_key(key: str) -> str | None:
    for pattern, replacement in KEY_MAP:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return None


def infer_backbone(state: dict[str, torch.Tensor]) -> str:
    """Name the torchvision architecture from the layer shapes of a ResNet state dict."""
    blocks_in_layer3 = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
    if "layer1.0.conv3.weight" not in state:
        return {2: "resnet18", 6: "resnet34"}.get(blocks_in_layer3, "")
    conv2 = state["layer1.0.conv2.weight"].shape
    if conv2[1] != conv2[0]:
        return "resnext50_32x4d"
    if conv2[0] == 128:
        return "wide_resnet50_2"
    return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(blocks_in_layer3, "")


def infer_model_config(state: dict[str, torch.Tensor]) -> dict:
    required = ("cls3.6.weight", "cls3.3.weight", "fpn.F4_1.weight", "apn.A3_2.conv1.weight", "layer3.0.conv1.weight")
    absent = [k for k in required if k not in state]
    if absent:
        raise CncnnError(f"not a CN-CNN state dict in the authors' layout: missing {', '.join(absent)}")
    channels = state["fpn.F4_1.weight"].shape[0]
    arch = infer_backbone(state)
    if not arch:
        raise CncnnError("cannot tell the backbone architecture from the layer shapes in this state dict")
    return dict(
        type="CNCNN",
        num_classes=int(state["cls3.6.weight"].shape[0]),
        backbone=dict(type=arch, pretrained=None),
        fusion=dict(type="convlstm", channels=int(channels)),
        attention=dict(type="spatial_channel", reduction=int(channels // state["apn.A3_2.conv1.weight"].shape[0]),
                       mask_size="shared"),
        head=dict(type="cncnn", hidden=int(state["cls3.3.weight"].shape[0])),
    )


def convert_official(src: str | Path, dst: str | Path, preprocess: dict | None = None, dataset: str | None = None,
                     classes_file: str | Path | None = None) -> tuple[Path, list[str]]:
    """Convert; returns the written path and the names of official keys that were ignored.

    ``preprocess`` is the test preprocessing of the released config (``resize``, ``crop``, ``mean``,
    ``std``; a recipe's ``preprocess``); without it, 448 → 448 with ImageNet normalization.
    """
    state = load_state_file(src)
    try:
        model_cfg = infer_model_config(state)
    except CncnnError as exc:
        raise CncnnError(f"{src}: {exc}") from None
    mapped, ignored = {}, []
    for key, value in state.items():
        target = map_key(key)
        if target is None:
            ignored.append(key)
        else:
            mapped[target] = value
    model = build_model(model_cfg)
    missing = [k for k in model.state_dict() if k not in mapped]
    if missing:
        raise CncnnError(f"{src}: keys missing for a full CN-CNN: {', '.join(missing[:8])}"
                         + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    load_weights(model, mapped, src)
    num_classes = model_cfg["num_classes"]
    info = Checkpoint(
        model=model_cfg,
        classes=read_classes(classes_file, num_classes),
        preprocess=dict(preprocess or DEFAULT_PREPROCESS),
        dataset={"type": dataset} if dataset else None,
        extra={"source": "official", "converted_from": Path(src).name},
    )
    return save_checkpoint(dst, model.state_dict(), info), ignored


#: Without a recipe: the released configs' 448 crop, unresized, ImageNet normalization.
DEFAULT_PREPROCESS = {"resize": 448, "crop": 448, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def read_classes(path: str | Path | None, num_classes: int) -> list[str]:
    """One class name per line (blank lines ignored); placeholders ``class_000``… without a file."""
    if path is None:
        return [f"class_{i:03d}" for i in range(num_classes)]
    path = Path(path)
    if not path.is_file():
        raise CncnnError(f"--classes {path}: no such file")
    names = [line.strip() for line in read_text_file(path, "--classes").splitlines() if line.strip()]
    if len(names) != num_classes:
        raise CncnnError(f"--classes {path}: {len(names)} names, but the checkpoint has {num_classes} classes; "
                         f"give one name per line, in label order")
    return names
