"""``cncnn benchmark``: one JSON document with the promised keys and plausible values, for every variant."""
from __future__ import annotations

import json

import pytest
import torch

from cncnn_cli.cli.main import main

TINY = ["--image-size", "64", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--backbone", "resnet18"]
VARIANTS = ["full", "hl+lh", "hl", "baseline", "official-formulation"]
KEYS = {"device", "device_name", "variant", "image_size", "batch_size", "amp", "precision", "fp32_matmul_precision",
        "tf32", "channels_last", "cudnn_benchmark", "compile", "impl", "steps", "warmup", "train", "infer", "peak_memory_mb", "params_m",
        "gflops_per_image"}


def _run(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["benchmark", *TINY, "--device", "cpu", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def results():
    """variant → JSON document, measured once for the module."""
    return {}


@pytest.mark.parametrize("variant", VARIANTS)
def test_json_has_exactly_the_promised_keys_and_plausible_values(variant, results, capsys):
    doc = _run(capsys, "--variant", variant)
    results[variant] = doc
    assert set(doc) == KEYS
    assert set(doc["train"]) == set(doc["infer"]) == {"step_s", "images_per_s", "mfu"}
    # as `cncnn train` runs on CPU: no TF32, NCHW in fp32, no cuDNN; a CPU has no known peak
    assert (doc["precision"], doc["fp32_matmul_precision"], doc["tf32"]) == ("fp32", "highest", False)
    assert doc["channels_last"] is False and doc["cudnn_benchmark"] is False
    assert doc["train"]["mfu"] is None and doc["infer"]["mfu"] is None
    assert doc["device"] == "cpu" and doc["variant"] == variant and doc["amp"] is False
    assert doc["image_size"] == 64 and doc["batch_size"] == 2
    for part in ("train", "infer"):
        assert doc[part]["step_s"] > 0
        assert doc[part]["images_per_s"] == pytest.approx(2 / doc[part]["step_s"], rel=1e-2)
    assert doc["peak_memory_mb"] >= 0 and doc["params_m"] > 0 and doc["gflops_per_image"] > 0


def test_flops_and_parameters_follow_the_variants(results):
    if set(results) != set(VARIANTS):
        pytest.skip("needs every variant's run")
    flops = {v: results[v]["gflops_per_image"] for v in VARIANTS}
    assert flops["official-formulation"] > flops["full"] > flops["hl+lh"] > flops["hl"] > flops["baseline"]
    assert results["official-formulation"]["params_m"] == results["full"]["params_m"]
    assert results["full"]["params_m"] > results["hl"]["params_m"] > results["baseline"]["params_m"]


@pytest.mark.parametrize("extra", [["--amp"], ["--checkpoint-convlstm"]])
def test_amp_and_checkpointed_convlstm_run(extra, capsys):
    doc = _run(capsys, "--variant", "full", *extra)
    assert set(doc) == KEYS and doc["amp"] is ("--amp" in extra)
    assert doc["train"]["step_s"] > 0
    if "--amp" in extra:  # as `train --amp` on CPU: bf16, channels_last (oneDNN's fast bf16 kernels)
        assert doc["precision"] == "bf16" and doc["channels_last"] is True


@pytest.mark.parametrize("extra,expected", [
    ([], ("phase", False)), (["--impl", "conv"], ("conv", False)), (["--compile"], ("conv", True)),
    (["--compile", "--impl", "phase"], ("phase", True)), (["--variant", "official-formulation"], ("plain", False)),
    (["--variant", "hl"], (None, False)),
])
def test_json_reports_the_convlstm_path_that_ran_and_compile(extra, expected, capsys, monkeypatch):
    monkeypatch.setattr("cncnn_cli.models.compile.BACKEND", "aot_eager")  # inductor's C++ build is slow here
    doc = _run(capsys, *extra)
    assert (doc["impl"], doc["compile"]) == expected


def test_defaults_follow_the_device():
    from cncnn_cli.apis.benchmark import DEFAULT_RUN

    assert DEFAULT_RUN["cuda"][:2] == (64, 10) and DEFAULT_RUN["cpu"][0] == 2


@pytest.mark.parametrize("name,precision,peak", [
    ("NVIDIA H200", "bf16", 989.4), ("NVIDIA H100 80GB HBM3", "tf32", 494.7), ("NVIDIA H100 80GB HBM3", "fp32", 66.9),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0), ("NVIDIA A100-PCIE-40GB", "tf32", 156.0),
    ("NVIDIA H100 PCIe", "bf16", None), ("NVIDIA H200 NVL", "bf16", None), ("Tesla T4", "fp16", None),
    ("Intel(R) Xeon(R) Processor, 2 threads, AVX512", "fp32", None),
])
def test_peaks_are_known_only_for_listed_boards(name, precision, peak):
    from cncnn_cli.apis.benchmark import peak_tflops

    assert peak_tflops(name, precision) == peak


def test_mfu_is_achieved_flops_over_the_peak_for_the_precision_used():
    from cncnn_cli.apis.benchmark import _speed, mfu_precision

    # 2 images of 100 TFLOP each in 1 s against a 400 TFLOP/s peak: half the peak
    assert _speed(1.0, 2, 100e12, 400.0) == {"step_s": 1.0, "images_per_s": 2.0, "mfu": 0.5}
    assert _speed(1.0, 2, 100e12, None)["mfu"] is None
    assert mfu_precision({"precision": "fp32", "tf32": True}) == "tf32"
    assert mfu_precision({"precision": "fp32", "tf32": False}) == "fp32"
    assert mfu_precision({"precision": "bf16", "tf32": True}) == "bf16"


def test_table_goes_to_stdout_and_logs_to_stderr(capsys):
    capsys.readouterr()
    assert main(["benchmark", *TINY, "--device", "cpu", "--variant", "hl"]) == 0
    out, err = capsys.readouterr()
    assert "GFLOPs per image" in out and "train step" in out
    assert "hl on " in err and "{" not in out


@pytest.mark.parametrize("args,message", [
    (["--image-size", "100"], "multiple of 32"),
    (["--variant", "baseline", "--checkpoint-convlstm"], "ConvLSTM variant"),
    (["--device", "cuda:7"], "--device"),
    (["--variant", "hl", "--impl", "conv"], "--impl chooses the fast path of the full model's ConvLSTM"),
])
def test_bad_settings_are_usage_errors(args, message, capsys):
    assert main(["benchmark", *TINY, *args]) == 2
    assert message in capsys.readouterr().err


def test_on_cuda_the_peak_memory_is_reset_after_the_warm_up(monkeypatch):
    """cudnn.benchmark tries algorithms (and compiling runs) in the warm-up: not training's steady peak."""
    from cncnn_cli.apis import benchmark

    events = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    monkeypatch.setattr(benchmark, "_sync", lambda device: None)
    with benchmark._peak_memory(torch.device("cuda")) as memory:
        benchmark._time(lambda: events.append("step"), torch.device("cuda"), 2, 3, "steps", False,
                        memory["after_warmup"])
    assert events == ["reset", "step", "step", "step", "reset", "step", "step"] and memory["mb"] == 3
