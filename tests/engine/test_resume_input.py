"""What ``--resume`` accepts, and the one-line errors for files that are not a training state."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from cncnn_cli.cli.main import normalize_resume
from cncnn_cli.engine.runner import check_state_file
from cncnn_cli.errors import CncnnError


@pytest.mark.parametrize("argv,expected", [
    (["train", "demo", "--resume"], ["train", "demo", "--resume", "auto"]),
    (["train", "demo", "--resume", "--epochs", "3"], ["train", "demo", "--resume", "auto", "--epochs", "3"]),
    # the command a resumed run prints when it is interrupted again
    (["train", "demo", "--resume", "auto"], ["train", "demo", "--resume", "auto"]),
    # a path, even a missing one, is the value (and gets its own error), as docs/training.md documents
    (["train", "demo", "--resume", "old/state.pth"], ["train", "demo", "--resume", "old/state.pth"]),
    (["train", "demo", "--resume", "missing.pth"], ["train", "demo", "--resume", "missing.pth"]),
    # the recipe after a bare --resume stays the recipe
    (["train", "--resume", "demo"], ["train", "--resume", "auto", "demo"]),
])
def test_resume_takes_auto_or_a_path(argv, expected):
    assert normalize_resume(argv) == expected


def test_files_that_are_not_a_training_state_are_named(tmp_path):
    weights = tmp_path / "best.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    with pytest.raises(CncnnError, match="best.safetensors is not a training state. It is a weights file"):
        check_state_file(weights)
    foreign = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CncnnError, match="other.pth was not written by cncnn train"):
        check_state_file(foreign)
    broken = tmp_path / "state.pth"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CncnnError, match="state.pth cannot be read as a training state"):
        check_state_file(broken)
    check_state_file(_state(tmp_path))


def _state(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"state_dict": {}, "cncnn": {"max_epochs": 1}}, path)
    return path
