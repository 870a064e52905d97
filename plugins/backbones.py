"""torchvision ResNet-family backbones that return the stage-3/4/5 maps (S3, S4, S5).

The module keeps torchvision's attribute names (``conv1``, ``bn1``, ``layer1``…``layer4``)
so an ImageNet state dict loads unchanged; only ``fc`` and ``avgpool`` are dropped.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from cncnn_cli.errors import CncnnError
from cncnn_cli.weights.pretrained import load_pretrained_state
from cncnn_cli.registry import BACKBONES


class ResNetBackbone(nn.Module):
    """A torchvision ResNet trunk that returns (S3, S4, S5) = outputs of layer2, layer3, layer4."""

    strides = (8, 16, 32)

    def __init__(self, arch: str, pretrained: str | None = None) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        self.arch = arch
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = tuple(_stage_channels(layer) for layer in (self.layer2, self.layer3, self.layer4))
        if pretrained:
            self.load_imagenet(pretrained)

    def load_imagenet(self, pretrained: str | Path) -> None:
        """Load torchvision ImageNet weights by enum name (``IMAGENET1K_V1``) or from a file path."""
        state = load_pretrained_state(self.arch, pretrained)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CncnnError(
                f"pretrained weights '{pretrained}' do not fit {self.arch}: "
                f"missing {_preview(missing)}, unexpected {_preview(unexpected)}. "
                f"Give weights of a torchvision {self.arch}."
            )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        s3 = self.layer2(self.layer1(x))
        s4 = self.layer3(s3)
        s5 = self.layer4(s4)
        return s3, s4, s5


def _stage_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return last_bn.num_features


def _preview(keys: list[str], limit: int = 5) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _register(arch: str, depth_note: str) -> None:
    def factory(pretrained: str | None = None) -> ResNetBackbone:
        return ResNetBackbone(arch, pretrained=pretrained)

    factory.__doc__ = f"torchvision {arch} trunk, {depth_note}."
    factory.__name__ = arch
    BACKBONES.register_module(name=arch, module=factory)


for _arch, _note in (
    ("resnet18", "S3/S4/S5 of 128/256/512 channels"),
    ("resnet34", "S3/S4/S5 of 128/256/512 channels"),
    ("resnet50", "512/1024/2048 channels (the paper's)"),
    ("resnet101", "512/1024/2048 channels"),
    ("resnet152", "512/1024/2048 channels"),
    ("resnext50_32x4d", "512/1024/2048 channels"),
    ("wide_resnet50_2", "512/1024/2048 channels"),
):
    _register(_arch, _note)
