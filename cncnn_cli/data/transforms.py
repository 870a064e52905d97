"""Recipe-driven preprocessing with ``torchvision.transforms.v2``.

Images travel as uint8 CHW tensors; normalization (mean/std) happens on the device in
the model's data preprocessor, so the loader moves 4× fewer bytes.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from cncnn_cli.deploy.preprocess import size_pair

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def build_transform(preprocess: dict, train: bool) -> v2.Compose:
    """Train: resize → random crop → horizontal flip. Test: resize → center crop. Output uint8 CHW."""
    resize = size_pair(preprocess["resize"])
    crop = size_pair(preprocess["crop"])
    steps: list = [v2.ToImage(), v2.Resize(resize, antialias=True)]
    if train:
        steps += [v2.RandomCrop(crop), v2.RandomHorizontalFlip()]
    else:
        steps += [v2.CenterCrop(crop)]
    steps.append(v2.ToDtype(torch.uint8, scale=True))
    return v2.Compose(steps)
