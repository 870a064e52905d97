"""--sync-bn: every variant converts to synchronized BatchNorm with the same numbers, and the flag
stops early where torch's SyncBatchNorm cannot run (several CPU processes)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cncnn_cli.engine.sync_bn import convert_sync_batchnorm
from cncnn_cli.errors import CncnnError
from cncnn_cli.cli.main import main
from cncnn_cli.models.classifier import build_model
from cncnn_cli.models.variants import VARIANTS, variant_model
from cncnn_plugins.fusions import ReplicatedSyncBatchNorm2d
from tests.helpers.configs import tiny_model_config
from tests.helpers.configs import DEMO, TINY


def _train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict, dict]:
    """Logits and every gradient of one train-mode forward and backward of the summed losses."""
    model.train()
    model.zero_grad()
    logits = model.forward_features(images)["heads"]
    sum(nn.functional.cross_entropy(value, labels) for value in logits.values()).backward()
    return logits, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_model_trains_like_the_unconverted_one(variant):
    plain = build_model(variant_model(tiny_model_config(), variant))
    synced = convert_sync_batchnorm(copy.deepcopy(plain))
    norms = [m for m in synced.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    if variant != "baseline":
        assert isinstance(synced.fusion.laterals.fpa5.master.bn, ReplicatedSyncBatchNorm2d)
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    logits, grads = _train_step(plain, images, labels)
    synced_logits, synced_grads = _train_step(synced, images, labels)
    for name in logits:
        torch.testing.assert_close(synced_logits[name], logits[name], rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():  # float rounding, relative to the layer's largest gradient
        assert (synced_grads[name] - grad).abs().max() <= 1e-4 * grad.abs().max() + 1e-8, name
    plain_state, synced_state = plain.state_dict(), synced.state_dict()
    assert plain_state.keys() == synced_state.keys()
    for name in plain_state:  # running means and variances, the replicated layer's rule included
        torch.testing.assert_close(synced_state[name], plain_state[name], rtol=1e-5, atol=1e-6, msg=name)
    plain.eval(), synced.eval()
    with torch.no_grad():
        torch.testing.assert_close(synced(images)["logits"],
                                   plain(images)["logits"])


def test_timm_batchnorm_act_keeps_its_activation_when_synchronized():
    """timm trunks fuse BatchNorm and activation in one layer; torch's converter would drop the activation."""
    layers = pytest.importorskip("timm.layers")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), layers.BatchNormAct2d(4, act_layer=nn.ReLU)).eval()
    synced = convert_sync_batchnorm(copy.deepcopy(plain)).eval()
    assert isinstance(synced[1], layers.SyncBatchNormAct)
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (plain(images) == 0).any()  # the ReLU is there to keep
        torch.testing.assert_close(synced(images), plain(images))


def test_a_batchnorm_with_its_own_forward_is_refused_not_changed():
    class ScaledNorm(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(CncnnError, match=r"^--sync-bn cannot convert .*ScaledNorm: it computes more than a BatchNorm"):
        convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), ScaledNorm(4)))


def test_sync_bn_on_several_cpu_processes_stops_before_the_work_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["train", "demo", "--work-dir", str(tmp_path / "run"), "--launcher", "pytorch", "--device", "cpu",
                 "--sync-bn", *TINY, *DEMO, "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--sync-bn needs CUDA" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_sync_bn_in_one_process_says_it_has_no_effect_and_trains(tmp_path, capsys):
    assert main(["train", "demo", "--work-dir", str(tmp_path / "run"), "--sync-bn", *TINY, *DEMO,
                 "--epochs", "1"]) == 0
    assert "--sync-bn has no effect in a single process" in capsys.readouterr().err
    assert (tmp_path / "run" / "best.safetensors").is_file()
