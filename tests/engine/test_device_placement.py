"""The run's device is the one mmengine uses, and a resumed state loads where RNG states can be restored.

mmengine picks its device when it is imported (CUDA whenever a GPU is visible) and resumes onto it;
CI has no GPU, so these tests give mmengine the choice a GPU machine would make.
"""
from __future__ import annotations

import json

import mmengine.device.utils
import torch

from cncnn_cli.cli.main import main
from cncnn_cli.engine.mmengine_compat import load_local_weights_only
from cncnn_cli.engine.state import restore_rng_state, rng_state
from tests.helpers.configs import DEMO, TINY


def test_device_cpu_trains_on_the_cpu_where_mmengine_would_choose_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(mmengine.device.utils, "DEVICE", "cuda")  # as imported on a GPU machine
    assert main(["train", "demo", "--work-dir", str(tmp_path / "run"), "--device", "cpu", *TINY, *DEMO,
                 "--epochs", "1"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["device"].startswith("cpu")


def test_a_training_state_loads_on_the_cpu_whatever_device_the_resume_asks_for(tmp_path):
    """``Runner.resume`` asks for the run's device (CUDA on a GPU); ``torch.set_rng_state`` takes CPU tensors only."""
    path = tmp_path / "state.pth"
    torch.save({"cncnn": {"rng": rng_state()}, "weight": torch.ones(2)}, path)
    loaded = load_local_weights_only(str(path), map_location="meta")  # stands in for "cuda" on this CPU
    assert loaded["weight"].device.type == "cpu"
    restore_rng_state(loaded["cncnn"]["rng"])
