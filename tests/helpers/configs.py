"""Flags and model configs that keep tests small: tiny models, tiny demo sets."""
from __future__ import annotations

#: `cncnn train` flags for a tiny, fast model (ResNet-18 from scratch at 32 pixels, narrow parts).
TINY = ["--backbone", "resnet18", "--no-pretrained", "--image-size", "32", "--workers", "0",
        "--cfg-options", "model.fusion.channels=16", "--cfg-options", "model.head.hidden=16"]
#: A demo set of 4 training and 2 test images per class at 40 pixels.
DEMO = ["--batch-size", "8", "--cfg-options", "dataset.train_per_class=4", "--cfg-options", "dataset.test_per_class=2",
        "--cfg-options", "dataset.image_size=40", "--cfg-options", "log_interval=1"]


def tiny_model_config(num_classes: int = 5, fusion: str = "convlstm", attention: str = "spatial_channel",
                      channels: int = 32, hidden: int = 16) -> dict:
    return dict(type="CNCNN", num_classes=num_classes, backbone=dict(type="resnet18", pretrained=None),
                fusion=dict(type=fusion, channels=channels), attention=dict(type=attention, reduction=16),
                head=dict(type="cncnn", hidden=hidden))
