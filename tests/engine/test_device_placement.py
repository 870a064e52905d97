"""The run's device is the one mmengine uses, and a resumed state loads where RNG states can be restored.

mmengine picks its device when it is imported (CUDA whenever a GPU is visible) and resumes onto it;
CI has no GPU, so these tests give mmengine the choice a GPU machine would make.
"""
from __future__ import annotations

import json

import mmengine.device.utils
import pytest
import torch

from cncnn_cli.cli.main import main
from cncnn_cli.engine.mmengine_compat import load_local_weights_only
from cncnn_cli.engine.state import restore_rng_state, rng_state
from cncnn_cli.errors import CncnnError
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


def test_a_process_without_a_gpu_of_its_own_is_told_how_to_launch(monkeypatch):
    """Slurm's --gpus-per-task binds one GPU to each task, which then sees only cuda:0 whatever its LOCAL_RANK."""
    from cncnn_cli.engine import plan

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert plan._local_gpu("pytorch") == 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(CncnnError, match=r"process 3 of its node \(LOCAL_RANK\) but it sees 1 GPU\(s\).*"
                                         r"--gpus-per-node, not --gpus-per-task"):
        plan._local_gpu("pytorch")


def test_running_out_of_gpu_memory_is_one_line_with_what_was_asked_and_flags_that_fit(tmp_path, monkeypatch, capsys):
    from cncnn_cli.models.classifier import CNCNN

    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                          "capacity of 7.6 GiB of which 1.1 GiB is free.")

    monkeypatch.setattr(CNCNN, "forward_features", out_of_memory)
    assert main(["train", "demo", "--work-dir", str(tmp_path / "run"), *TINY, *DEMO, "--epochs", "1",
                 "--batch-size", "8"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: out of GPU memory at --batch-size 8 per device (")
    assert "2.00 GiB more requested" in lines[0] and "--batch-size 4 --accumulate 2" in lines[0]
    assert lines[0].endswith("roughly halves activation memory. No epoch had finished, so nothing was saved.")
