"""Error lines that must tell the truth: what a diverged run left behind, and which input
(flag, --cfg-options or recipe) holds an impossible value."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub

from cncnn_cli.config.resolve import resolve_config
from cncnn_cli.engine.hooks import STATE_FILE, NonFiniteLoss, WorkDirHook
from cncnn_cli.errors import CncnnError


def _diverge(work_dir, epoch: int) -> str:
    """The NonFiniteLoss message of a run in ``work_dir`` whose loss turns NaN in epoch ``epoch + 1``."""
    runner = SimpleNamespace(train_dataloader=[None] * 2, epoch=epoch, max_epochs=3, iter=0,
                             optim_wrapper=SimpleNamespace(optimizer=SimpleNamespace(param_groups=[{"lr": 0.1}])),
                             message_hub=MessageHub(f"test_messages_{id(work_dir)}_{epoch}"))
    hook = WorkDirHook(lambda: None, run_info={}, resuming=False, interval=1)
    hook.work_dir = work_dir
    hook.before_train_epoch(runner)
    batch = {"inputs": torch.zeros(2, 1), "data_samples": torch.zeros(2)}
    with pytest.raises(NonFiniteLoss) as caught:
        hook.after_train_iter(runner, 0, data_batch=batch, outputs={"loss": torch.tensor(math.nan)})
    return str(caught.value)


def test_a_nan_in_the_first_epoch_does_not_promise_files_that_do_not_exist(tmp_path):
    message = _diverge(tmp_path, epoch=0)
    assert "last.safetensors" not in message and STATE_FILE not in message
    assert "nothing saved" in message and "--lr" in message


def test_a_nan_after_saved_epochs_names_the_files_that_hold_the_last_good_one(tmp_path):
    for name in ("last.safetensors", STATE_FILE):
        (tmp_path / name).write_bytes(b"saved")
    message = _diverge(tmp_path, epoch=2)
    assert f"{tmp_path / 'last.safetensors'} and {tmp_path / STATE_FILE} hold epoch 2" in message


@pytest.mark.parametrize("flags, blamed", [
    ({"lr": -1.0}, "(--lr)"),
    ({"batch_size": 0}, "(--batch-size)"),
    ({"val_fraction": 1.5}, "(--val-fraction)"),
])
def test_an_impossible_value_blames_the_flag_that_gave_it(flags, blamed):
    with pytest.raises(CncnnError) as caught:
        resolve_config("demo", flags)
    assert blamed in str(caught.value) and "recipe" not in str(caught.value)

