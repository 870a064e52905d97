"""tools/heldout_classes.py end to end at a tiny size: train on the first classes, add two through a
gallery, and count what `cncnn predict --gallery` says about every held-out image."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.configs import DEMO, TINY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_experiment_trains_builds_a_gallery_and_counts_every_held_out_image(tmp_path):
    out = tmp_path / "heldout"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "heldout_classes.py"), "--trained", "3",
                             "--work-dir", str(tmp_path / "run"), "--out", str(out), "--shots", "2",
                             "--holdout", "0.5", "--", *TINY, *DEMO, "--epochs", "1"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["gallery_classes"] == ["blue crown", "magenta crown"] and report["unseen_class"] == "red wing"
    per_class = 2  # DEMO's test_per_class: the val split has as many
    assert (report["trained_classes_images"], report["new_classes_images"], report["unseen_class_images"]) \
        == (3 * per_class, 2 * per_class, per_class)
    assert sorted(p.parent.name for p in (out / "gallery").glob("*/*.png")) == ["blue crown"] * 2 + ["magenta crown"] * 2
    for key in ("new_classes_top1", "trained_classes_top1_extend", "trained_classes_top1_model_alone",
                "unseen_class_unknown", "known_classes_unknown"):
        assert 0 <= report[key] <= 100, key
    assert -1 <= report["unknown_threshold"] <= 1


def test_a_folder_of_the_users_files_as_out_is_refused_and_left_as_it_was(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.txt").write_text("my notes")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "heldout_classes.py"), "--out", str(mine),
                             "--work-dir", str(tmp_path / "run")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "holds 'report.txt'" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in mine.iterdir()] == ["report.txt"] and not (tmp_path / "run").exists()
