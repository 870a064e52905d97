"""Shared fixtures: tiny models on CPU, deterministic seeds, no network."""
from __future__ import annotations

import socket

import pytest
import torch

from cncnn_cli.registry import load_plugins

load_plugins()


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
