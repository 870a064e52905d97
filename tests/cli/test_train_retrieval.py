"""``retrieval=True`` (``--retrieval``): Recall@K and MAP@R at every evaluation of a training run."""
from __future__ import annotations

import json

import pytest

from cncnn_cli.cli.main import main
from tests.helpers.configs import DEMO, TINY

pytestmark = pytest.mark.slow

KEYS = {"retrieval_recall_at_1", "retrieval_recall_at_2", "retrieval_recall_at_4", "retrieval_recall_at_8",
        "retrieval_map_at_r"}


def test_retrieval_figures_of_every_epoch_equal_those_of_eval_on_the_saved_weights(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(run), *TINY, *DEMO, "--epochs", "2", "--retrieval"]) == 0
    assert "R@1" in capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(KEYS <= entry.keys() for entry in metrics["history"])
    assert KEYS <= metrics["last"].keys() and KEYS <= metrics["best"].keys()
    assert main(["eval", str(run / "last.safetensors"), "--retrieval", "--json", "--workers", "0",
                 "--batch-size", "8"]) == 0
    offline = json.loads(capsys.readouterr().out)["retrieval"]
    for key in KEYS:
        name = key.removeprefix("retrieval_").replace("_at_", "@")
        assert metrics["last"][key] == pytest.approx(offline[name], abs=1e-4), key


def test_retrieval_is_off_by_default_and_reaches_the_final_test_under_a_validation_split(tmp_path, capsys):
    plain = tmp_path / "plain"
    assert main(["train", "demo", "--work-dir", str(plain), *TINY, *DEMO, "--epochs", "1"]) == 0
    assert not KEYS & json.loads((plain / "metrics.json").read_text())["last"].keys()
    held = tmp_path / "held"
    assert main(["train", "demo", "--work-dir", str(held), *TINY, *DEMO, "--epochs", "1", "--retrieval",
                 "--val-fraction", "0.5"]) == 0
    metrics = json.loads((held / "metrics.json").read_text())
    assert KEYS <= metrics["last"].keys() and KEYS <= metrics["test_at_best_val"].keys()
