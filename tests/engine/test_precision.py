"""TF32 policy: CUDA fp32 matmuls/convolutions in TF32 unless ``fp32_precision="highest"``; CPUs untouched.

torch's settings are process-wide flags that can be set without a GPU, so the CUDA branch is
exercised here on CPU; each test restores them.
"""
from __future__ import annotations

import json

import pytest
import torch

from cncnn_cli.config.resolve import resolve_config
from cncnn_cli.engine.precision import apply_fp32_precision, describe_fp32_precision, uses_channels_last
from cncnn_cli.errors import CncnnError
from tests.helpers.configs import DEMO, TINY

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_precision():
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


def test_cuda_trains_in_tf32_by_default_and_highest_keeps_full_fp32():
    torch.set_float32_matmul_precision("highest")
    assert apply_fp32_precision(CUDA) == {"fp32_matmul_precision": "high", "tf32": True}
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    assert apply_fp32_precision(CUDA, "highest") == {"fp32_matmul_precision": "highest", "tf32": False}
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    assert "TF32" in describe_fp32_precision(apply_fp32_precision(CUDA))


def test_a_cpu_keeps_full_fp32_and_its_settings_untouched():
    torch.set_float32_matmul_precision("highest")
    assert apply_fp32_precision(CPU, "high") == {"fp32_matmul_precision": "highest", "tf32": False}
    assert torch.get_float32_matmul_precision() == "highest"
    assert describe_fp32_precision(apply_fp32_precision(CPU)) == "fp32 matmuls and convolutions: full fp32"


def test_an_unknown_precision_is_a_usage_error():
    with pytest.raises(CncnnError, match="expected high or highest"):
        apply_fp32_precision(CUDA, "medium")


def test_channels_last_as_training_uses_it():
    assert uses_channels_last(CUDA, amp=False) and uses_channels_last(CPU, amp=True)
    assert not uses_channels_last(CPU, amp=False)


def test_the_recipe_key_defaults_to_high_and_is_validated():
    assert resolve_config("demo").fp32_precision == "high"
    assert resolve_config("demo", {"fp32_precision": "highest"}).fp32_precision == "highest"
    with pytest.raises(CncnnError, match="fp32_precision"):
        resolve_config("demo", cfg_options=["fp32_precision=medium"])


def test_train_flag_reaches_metrics_json_and_stderr(tmp_path, capsys):
    from cncnn_cli.cli.main import main

    work = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(work), *TINY, *DEMO, "--epochs", "1", "--device", "cpu",
                 "--fp32-precision", "highest"]) == 0
    assert "fp32 matmuls and convolutions: full fp32" in capsys.readouterr().err
    metrics = json.loads((work / "metrics.json").read_text())
    assert (metrics["fp32_matmul_precision"], metrics["tf32"]) == ("highest", False)
    assert main(["train", "demo", "--fp32-precision", "medium"]) == 2
