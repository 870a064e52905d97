"""Shared fixtures: tiny models on CPU, deterministic seeds, no network."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from cncnn_cli.registry import load_plugins

load_plugins()

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


@pytest.fixture(autouse=True)
def _seed_and_no_network(monkeypatch):
    torch.manual_seed(0)

    def refuse(*args, **kwargs):
        raise OSError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def cncnn_checkpoint(tmp_path_factory) -> Path:
    """A converted random official checkpoint (ResNet-18, C=32, D=16, 5 classes) at 64×64 input."""
    from cncnn_cli.cli.main import main
    from cncnn_cli.weights.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
    from tests.reference import random_official_state

    folder = tmp_path_factory.mktemp("ckpt")
    src = folder / "official.pth"
    torch.save(random_official_state("resnet18", channels=32, hidden=16, num_classes=5), src)
    dst = folder / "cncnn.safetensors"
    assert main(["convert", "official", str(src), str(dst)]) == 0
    info, weights = read_checkpoint(dst)
    info.preprocess.update(resize=72, crop=64)  # small inputs keep tests fast
    save_checkpoint(dst, weights, Checkpoint(**info.__dict__))
    return dst
