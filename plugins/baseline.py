"""The paper's baseline: a fine-tuned backbone with global average pooling and one FC layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cncnn_cli.models.classifier import Classifier, CncnnDataPreprocessor
from cncnn_cli.registry import BACKBONES, MODELS, build_from


@MODELS.register_module(name="baseline")
class Baseline(Classifier):
    """Fine-tuned backbone → GAP → FC (Table 2's "Baseline", 84.1 on CUB)."""

    def __init__(self, num_classes: int, backbone: dict, data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=CncnnDataPreprocessor(**(data_preprocessor or {})))
        self.backbone = build_from(BACKBONES, backbone, "backbone")
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward_features(self, images: torch.Tensor) -> dict:
        s5 = self.backbone(images)[-1]
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(s5, 1), 1))
        return {"logits": logits, "heads": {"fc": logits}, "maps": None}
