"""Shared fixtures: tiny models on CPU, deterministic seeds, no network."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from cncnn_cli.registry import load_plugins

load_plugins()

@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (``benchmark --threads`` run in-process) must not leak it:
    a later in-process training would then take another numerical path than the same run in a
    subprocess (different threads, different sums), and a resume-equals-straight check fails."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_and_no_network(monkeypatch):
    torch.manual_seed(0)

    def refuse(*args, **kwargs):
        raise OSError("tests must not touch the network")

    local_connect = socket.socket.connect

    def connect(sock, address):  # Unix sockets are local IPC (DataLoader workers share tensors through them)
        if sock.family != socket.AF_UNIX:
            refuse()
        return local_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def official_state() -> dict:
    """A random state dict in the authors' released layout (ResNet-18, C=32, D=16, 5 classes)."""
    from tests.helpers.reference import random_official_state

    return random_official_state("resnet18", channels=32, hidden=16, num_classes=5)


@pytest.fixture(scope="session")
def converted_checkpoint(tmp_path_factory, official_state) -> Path:
    """``official_state`` through ``cncnn convert official --classes`` (classes "bird 0" … "bird 4"), the
    released preprocessing kept. Session-wide: tests copy it before changing it."""
    from cncnn_cli.cli.main import main

    folder = tmp_path_factory.mktemp("converted")
    src = folder / "official.pth"
    torch.save(official_state, src)
    classes = folder / "classes.txt"
    classes.write_text("\n".join(f"bird {i}" for i in range(5)) + "\n")
    dst = folder / "converted.safetensors"
    assert main(["convert", "official", str(src), str(dst), "--classes", str(classes)]) == 0
    return dst


@pytest.fixture(scope="session")
def cncnn_checkpoint(tmp_path_factory, converted_checkpoint) -> Path:
    """``converted_checkpoint`` at 64×64 input: small inputs keep tests fast."""
    from cncnn_cli.weights.checkpoint import Checkpoint, read_checkpoint, save_checkpoint

    info, weights = read_checkpoint(converted_checkpoint)
    info.preprocess.update(resize=72, crop=64)
    dst = tmp_path_factory.mktemp("ckpt") / "cncnn.safetensors"
    save_checkpoint(dst, weights, Checkpoint(**info.__dict__))
    return dst
