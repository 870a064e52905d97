"""``cncnn benchmark``: one JSON document with the promised keys and plausible values, for every variant."""
from __future__ import annotations

import json

import pytest

from cncnn_cli.cli.main import main

TINY = ["--image-size", "64", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--backbone", "resnet18"]
VARIANTS = ["full", "hl+lh", "hl", "baseline", "official-formulation"]
KEYS = {"device", "variant", "image_size", "batch_size", "amp", "train", "infer", "peak_memory_mb", "params_m",
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
    assert set(doc["train"]) == set(doc["infer"]) == {"step_s", "images_per_s"}
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
])
def test_bad_settings_are_usage_errors(args, message, capsys):
    assert main(["benchmark", *TINY, *args]) == 2
    assert message in capsys.readouterr().err
