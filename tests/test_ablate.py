"""`cncnn ablate`: the paper's variants trained in turn and tabulated beside its numbers."""
from __future__ import annotations

import json

import pytest

from cncnn_cli.errors import CncnnError
from cncnn_cli.main import main
from cncnn_cli.variants import select_variant, variant_model
from tests.test_train import DEMO, TINY


def test_flags_name_the_papers_variants():
    assert select_variant(False, False, False) == "full"
    assert select_variant(True, False, False) == "hl+lh"
    assert select_variant(True, True, False) == "hl"
    assert select_variant(False, False, True) == "baseline"
    with pytest.raises(CncnnError):
        select_variant(False, True, False)


def test_variant_configs_swap_only_the_named_parts():
    model = dict(type="CNCNN", num_classes=7, backbone=dict(type="resnet50"), fusion=dict(type="convlstm", channels=64),
                 attention=dict(type="spatial_channel", reduction=8), head=dict(type="cncnn", hidden=32))
    assert variant_model(model, "hl+lh")["fusion"] == {"type": "sum", "channels": 64}
    assert variant_model(model, "hl+lh")["attention"] == {"type": "spatial_channel", "reduction": 8}
    assert variant_model(model, "hl")["attention"] == {"type": "identity"}
    assert variant_model(model, "baseline") == {"type": "baseline", "num_classes": 7, "backbone": {"type": "resnet50"}}
    assert variant_model(model, "full") == model


def test_ablate_all_writes_the_table_and_a_rerun_skips_finished_variants(tmp_path, capsys):
    args = ["ablate", "demo", "--all", "--epochs", "1", "--work-dir", str(tmp_path), *TINY, *DEMO]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "paper top-1" in captured.out and "88.9" in captured.out
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "hl", "hl+lh", "full"]
    assert set(rows[0]) == {"variant", "top1", "top5", "params", "gflops", "train_images_per_s", "best_epoch"}
    flops = {r["variant"]: r["gflops"] for r in rows}
    assert flops["full"] > flops["hl+lh"] > flops["hl"] > flops["baseline"] > 0
    params = {r["variant"]: r["params"] for r in rows}
    assert params["full"] > params["hl+lh"] > params["hl"] > params["baseline"] > 1_000_000
    assert "| full |" in (tmp_path / "ablation.md").read_text()
    assert main(args) == 0
    assert captured.err.count("training in") == 4
    assert capsys.readouterr().err.count("already trained") == 4


def test_a_single_variant_trains_in_its_own_folder(tmp_path):
    assert main(["ablate", "demo", "--no-convlstm", "--no-attention", "--epochs", "1", "--work-dir", str(tmp_path),
                 *TINY, *DEMO]) == 0
    assert (tmp_path / "hl" / "best.safetensors").is_file()
    assert json.loads((tmp_path / "ablation.json").read_text())[0]["variant"] == "hl"
