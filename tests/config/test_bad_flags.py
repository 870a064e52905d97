"""Every bad flag of `train` and `ablate` is one line on stderr and exit 2, and leaves no work dir."""
from __future__ import annotations

import pytest

from cncnn_cli.cli.main import main
from tests.helpers.configs import DEMO, TINY

BAD_FLAGS = {
    "negative lr": ["--lr", "-1"],
    "zero lr": ["--lr", "0"],
    "momentum of 1": ["--cfg-options", "optim_wrapper.optimizer.momentum=1.0"],
    "negative weight decay": ["--cfg-options", "optim_wrapper.optimizer.weight_decay=-0.1"],
    "negative lr_mult": ["--cfg-options", "optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult=-0.5"],
    "unknown optimizer": ["--cfg-options", "optim_wrapper.optimizer.type=SGDD"],
    "optimizer option typo": ["--cfg-options", "optim_wrapper.optimizer.momentun=0.9"],
    "another optimizer wrapper": ["--cfg-options", "optim_wrapper.type=AmpOptimWrapper"],
    "unknown scheduler": ["--cfg-options", "param_scheduler.0.type=Cosine"],
    "scheduler option typo": ["--cfg-options", "param_scheduler.0.eta_min_ration=0.1"],
    "zero epochs": ["--epochs", "0"],
    "zero batch": ["--batch-size", "0"],
    "val fraction above 1": ["--val-fraction", "1.5"],
    "val split of a set without one": ["--val-split", "val"],
    "zero accumulation": ["--accumulate", "0"],
    "accumulate and effective batch": ["--accumulate", "2", "--effective-batch", "16"],
    "impossible effective batch": ["--effective-batch", "7"],
    "crop not a multiple of 32": ["--image-size", "33"],
    "unknown dataset": ["--dataset", "birds"],
    "missing data root": ["--dataset", "cub", "--data-root", "/nonexistent/data"],
    "unknown backbone": ["--backbone", "resnet19"],
    "missing pretrained file": ["--cfg-options", "model.backbone.pretrained=/nonexistent/resnet18.pth"],
    "unavailable device": ["--device", "cuda:7"],
    "unknown launcher": ["--launcher", "mpi"],
    "recipe key typo": ["--cfg-options", "val_fractoin=0.1"],
    "bad max_pixels": ["--cfg-options", "max_pixels=0"],
    "unknown tracker": ["--vis-backend", "mlfow"],
    "tracker option typo": ["--vis-backend", "mlflow", "--cfg-options", "vis_backends.0.tracking_url=file:/x"],
    "unknown tracker type in the recipe key": ["--cfg-options", "vis_backends=[{'type': 'MLflow'}]"],
}


CASES = [(command, name) for command in ("train", "ablate") for name in BAD_FLAGS]
CASES.append(("train", "resume without a state"))
BAD_FLAGS["resume without a state"] = ["--resume"]


@pytest.mark.parametrize(("command", "case"), CASES, ids=[f"{command}: {case}" for command, case in CASES])
def test_a_bad_flag_is_one_line_exit_2_and_no_work_dir(tmp_path, capsys, command, case):
    work_dir = tmp_path / "work"
    # TINY's own --backbone/--image-size come first, so the flag under test overrides them
    code = main([command, "demo", "--work-dir", str(work_dir), *TINY, *DEMO, "--epochs", "1", *BAD_FLAGS[case]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err and "Traceback" not in err, err
    if "Usage:" not in err:  # Typer's own usage errors come in a box; ours are one line
        lines = [line for line in err.splitlines() if " training in " not in line]  # ablate's progress
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not work_dir.exists(), sorted(p.name for p in work_dir.rglob("*"))
