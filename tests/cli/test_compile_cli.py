"""``--compile`` end to end: train, eval and predict give the eager run's numbers."""
from __future__ import annotations

import json

import pytest

from cncnn_cli.cli.main import main
from cncnn_cli.config.resolve import resolve_config
from cncnn_cli.data.speed import write_synthetic_jpegs
from cncnn_cli.errors import CncnnError
from tests.helpers.configs import DEMO, TINY

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fast_backend(monkeypatch):
    """aot_eager traces the graphs inductor would compile, forward and backward, without building C++."""
    monkeypatch.setattr("cncnn_cli.models.compile.BACKEND", "aot_eager")


def test_compile_is_a_recipe_key_and_a_flag():
    assert resolve_config("demo", {"compile": True}).compile is True
    assert resolve_config("demo").compile is False
    with pytest.raises(CncnnError, match="compile: Input should be a valid boolean"):
        resolve_config("demo", cfg_options=["compile=sometimes"])


def test_compiled_train_runs_and_compiled_eval_and_predict_match_eager(tmp_path, capsys):
    # Training is not compared step by step here: this tiny model at lr 0.1 from scratch amplifies
    # float32 rounding ~100x per step (tests/models/test_compile.py compares one step in float64).
    work_dir = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(work_dir), *TINY, *DEMO, "--epochs", "1", "--compile"]) == 0
    assert json.loads((work_dir / "metrics.json").read_text())["history"][0]["loss"] > 0
    checkpoint = str(work_dir / "best.safetensors")
    images = sorted(str(p) for p in write_synthetic_jpegs(tmp_path / "images", count=2).rglob("*.jpg"))
    for command in (["eval", checkpoint, "--workers", "0"], ["predict", *images, "--checkpoint", checkpoint]):
        documents = []
        for extra in ([], ["--compile"]):
            capsys.readouterr()
            assert main([*command, "--json", *extra]) == 0
            documents.append(json.loads(capsys.readouterr().out))
        assert json.dumps(documents[1]) == json.dumps(documents[0]) or _close(documents[1], documents[0])


def _close(actual, expected) -> bool:
    """Equal up to float rounding (compiled kernels may sum in another order)."""
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_close(actual[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(_close(a, b) for a, b in zip(actual, expected))
    if isinstance(expected, float):
        return actual == pytest.approx(expected, rel=1e-4, abs=1e-6)
    return actual == expected


def test_ablate_passes_compile_to_every_run(monkeypatch, tmp_path):
    seen = {}

    def record(recipe, variants, flags, cfg_options, root, command, seeds):
        seen.update(flags=flags, variants=variants)
        return 0, None

    monkeypatch.setattr("cncnn_cli.apis.ablation.run_ablation", record)
    assert main(["ablate", "demo", "--baseline", "--compile", "--work-dir", str(tmp_path)]) == 0
    assert seen["flags"]["compile"] is True and seen["variants"] == ["baseline"]
    assert resolve_config("demo", seen["flags"]).compile is True
