"""Classifier heads: the four CN-CNN classifiers (cls3, cls4, cls5, concat)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cncnn_cli.registry import HEADS
from cncnn_plugins.init import init_new_layers


def level_classifier(channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """GAP → BN1d(C) → Linear(C, D) → BN1d(D) → ELU → Linear(D, K) (indices as the released code)."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.BatchNorm1d(channels), nn.Linear(channels, hidden),
        nn.BatchNorm1d(hidden), nn.ELU(inplace=True), nn.Linear(hidden, num_classes),
    )


def concat_classifier(channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """BN1d(3C) → Linear(3C, D) → BN1d(D) → ELU → Linear(D, K), after a flatten (index 0)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.BatchNorm1d(3 * channels), nn.Linear(3 * channels, hidden),
        nn.BatchNorm1d(hidden), nn.ELU(inplace=True), nn.Linear(hidden, num_classes),
    )


@HEADS.register_module(name="cncnn")
class CNCNNHead(nn.Module):
    """Four classifiers: one per attended level A3/A4/A5, one on [GAP F3, GAP F4, GAP F5]."""

    names = ("cls3", "cls4", "cls5", "concat")

    def __init__(self, channels: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        self.cls3 = level_classifier(channels, hidden, num_classes)
        self.cls4 = level_classifier(channels, hidden, num_classes)
        self.cls5 = level_classifier(channels, hidden, num_classes)
        self.concat = concat_classifier(channels, hidden, num_classes)
        init_new_layers(self)

    def forward(self, attended, fused) -> dict[str, torch.Tensor]:
        a3, a4, a5 = attended
        pooled = torch.cat([F.adaptive_avg_pool2d(f, 1) for f in fused], 1)
        return {"cls3": self.cls3(a3), "cls4": self.cls4(a4), "cls5": self.cls5(a5), "concat": self.concat(pooled)}
