"""A tiny 3-class CN-CNN trained (as far as its checkpoint says) on a tiny ImageFolder, and its ONNX export."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import datasets as fixtures
from tests.helpers.configs import tiny_model_config

CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="session")
def deploy_data(tmp_path_factory) -> Path:
    return fixtures.make_imagefolder(tmp_path_factory.mktemp("deploy_data"), classes=CLASSES,
                                     counts={"train": 3, "test": 3})


@pytest.fixture(scope="session")
def deploy_checkpoint(tmp_path_factory, deploy_data) -> Path:
    """Random weights (seeded), the released preprocessing shrunk to 40 → 32 pixels."""
    import torch

    from cncnn_cli.models.classifier import build_model
    from cncnn_cli.weights.checkpoint import Checkpoint, save_checkpoint

    torch.manual_seed(0)
    config = tiny_model_config(num_classes=len(CLASSES), channels=16)
    path = tmp_path_factory.mktemp("deploy_ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_model(config).state_dict(),
                    Checkpoint(model=config, classes=list(CLASSES), preprocess={"resize": 40, "crop": 32},
                               dataset={"type": "imagefolder", "data_root": str(deploy_data)}))
    return path


@pytest.fixture(scope="session")
def deploy_onnx(tmp_path_factory, deploy_checkpoint) -> Path:
    pytest.importorskip("onnxruntime")
    from cncnn_cli.cli.main import main

    out = tmp_path_factory.mktemp("deploy_onnx") / "tiny.onnx"
    assert main(["export", str(deploy_checkpoint), str(out)]) == 0
    return out
