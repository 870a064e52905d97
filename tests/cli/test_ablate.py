"""`cncnn ablate`: the paper's variants trained in turn and tabulated beside its numbers."""
from __future__ import annotations

import json
import statistics

import pytest

from cncnn_cli.errors import CncnnError
from cncnn_cli.cli.main import main
from cncnn_cli.models.variants import select_variant, variant_model
from tests.helpers.configs import DEMO, TINY

pytestmark = pytest.mark.slow


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


def test_ablate_all_with_seeds_writes_mean_and_std_and_a_rerun_skips_finished_runs(tmp_path, capsys):
    args = ["ablate", "demo", "--all", "--seeds", "2", "--epochs", "1", "--work-dir", str(tmp_path), *TINY, *DEMO]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "paper top-1" in captured.out and "88.9" in captured.out and "±" in captured.out
    assert "no test-time augmentation" in captured.out.replace("\n", " ")
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "hl", "hl+lh", "full"]
    for row in rows:
        runs = row["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for seed in (0, 1):
            metrics = json.loads((tmp_path / row["variant"] / f"seed{seed}" / "metrics.json").read_text())
            assert metrics["seed"] == seed and runs[seed]["top1"] == metrics["best"]["top1"]
        values = [r["top1"] for r in runs]
        assert row["top1"] == pytest.approx(statistics.mean(values), abs=1e-4)
        assert row["top1_std"] == pytest.approx(statistics.stdev(values), abs=1e-4)
        assert row["selected_on"] == "test" and row["tta"] == "none"
    flops = {r["variant"]: r["gflops"] for r in rows}
    assert flops["full"] > flops["hl+lh"] > flops["hl"] > flops["baseline"] > 0
    params = {r["variant"]: r["params"] for r in rows}
    assert params["full"] > params["hl+lh"] > params["hl"] > params["baseline"] > 1_000_000
    full = rows[-1]
    assert f"| full | {full['top1']:.2f} ± {full['top1_std']:.2f} |" in (tmp_path / "ablation.md").read_text()
    assert main(args) == 0
    assert captured.err.count("training in") == 8
    assert capsys.readouterr().err.count("already trained") == 8


def test_seed_and_seeds_together_are_refused(tmp_path, capsys):
    assert main(["ablate", "demo", "--seeds", "2", "--seed", "1", "--work-dir", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_single_variant_trains_in_its_own_folder(tmp_path):
    assert main(["ablate", "demo", "--no-convlstm", "--no-attention", "--epochs", "1", "--work-dir", str(tmp_path),
                 *TINY, *DEMO]) == 0
    assert (tmp_path / "hl" / "best.safetensors").is_file()
    assert json.loads((tmp_path / "ablation.json").read_text())[0]["variant"] == "hl"


def test_runs_chosen_another_way_are_not_mixed_into_the_table(tmp_path, capsys):
    args = ["ablate", "demo", "--baseline", "--epochs", "1", "--work-dir", str(tmp_path), *TINY, *DEMO]
    assert main(args) == 0
    assert main([*args, "--val-fraction", "0.25"]) == 2
    assert "another --work-dir" in capsys.readouterr().err
