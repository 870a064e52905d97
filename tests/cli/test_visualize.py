"""visualize: Figure-3 pictures per image, training curves, confusion matrices — real, non-blank PNGs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cncnn_cli.weights.checkpoint import Checkpoint, save_checkpoint
from cncnn_cli.cli.main import main
from cncnn_cli.models.classifier import build_model
from cncnn_cli.visualization.plotting import confusion_figure, save_figure
from tests.helpers import datasets as fixtures

IMAGE_SIZE = 64
PREPROCESS = dict(resize=IMAGE_SIZE + 8, crop=IMAGE_SIZE)


def _assert_real_picture(path: Path, min_width: int = 800) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape[1] >= min_width
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # far from a single colour or a blank frame


def test_one_picture_per_image_in_one_call_with_a_folder_input(tmp_path, cncnn_checkpoint, capsys):
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i in range(2):
        fixtures.photo(folder / f"bird{i}.png", seed=i)
    loose = fixtures.photo(tmp_path / "loose.jpg", seed=7)
    out = tmp_path / "figures"
    assert main(["visualize", str(tmp_path / "photos"), str(loose), "--checkpoint", str(cncnn_checkpoint),
                 "--out", str(out), "--batch-size", "2", "--device", "cpu"]) == 0
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["bird0_cncnn.png", "bird1_cncnn.png", "loose_cncnn.png"]
    for path in written:
        _assert_real_picture(path)
    err = capsys.readouterr().err
    assert all(str(path) in err for path in written)


def test_unreadable_images_are_reported_and_skipped(tmp_path, cncnn_checkpoint, capsys):
    good = fixtures.photo(tmp_path / "good.png", seed=1)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    assert main(["visualize", str(corrupt), str(good), "--checkpoint", str(cncnn_checkpoint),
                 "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["good_cncnn.png"]
    err = capsys.readouterr().err
    assert "corrupt.jpg" in err and "Traceback" not in err


def test_a_folder_without_images_is_bad_input(tmp_path, cncnn_checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["visualize", str(tmp_path / "empty"), "--checkpoint", str(cncnn_checkpoint)]) == 2
    assert "no image files" in capsys.readouterr().err


def test_a_model_without_attention_maps_gets_a_clear_message(tmp_path, capsys):
    model = build_model(dict(type="baseline", num_classes=5, backbone=dict(type="resnet18", pretrained=None)))
    checkpoint = save_checkpoint(tmp_path / "baseline.safetensors", model.state_dict(), Checkpoint(
        model=dict(type="baseline", num_classes=5, backbone=dict(type="resnet18", pretrained=None)),
        classes=[f"c{i}" for i in range(5)], preprocess=PREPROCESS))
    image = fixtures.photo(tmp_path / "x.png", seed=0)
    assert main(["visualize", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model (baseline) has no attention maps to show" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _metrics() -> dict:
    history = []
    for epoch in range(1, 13):
        lr = 0.01 * (1 + math.cos(math.pi * epoch / 13)) / 2
        entry = {"epoch": epoch, "loss": 4.0 * math.exp(-epoch / 4), "lr": lr, "backbone_lr": lr / 10}
        if epoch % 3 == 0:  # validation every 3 epochs; the last one drops below the best
            entry["top1"] = 40 + 4 * epoch - (15 if epoch == 12 else 0)
        history.append(entry)
    return {"history": history, "last": {"epoch": 12, "top1": 73.0},
            "best": {"epoch": 9, "top1": 76.0, "selected_on": "val"}, "test_at_best_val": None, "seed": 0}


def test_curves_from_a_work_dir(tmp_path, capsys):
    work_dir = tmp_path / "work_dirs" / "demo"
    work_dir.mkdir(parents=True)
    (work_dir / "metrics.json").write_text(json.dumps(_metrics()))
    assert main(["visualize", "--curves", str(work_dir)]) == 0
    _assert_real_picture(work_dir / "curves.png")
    assert str(work_dir / "curves.png") in capsys.readouterr().err
    assert main(["visualize", "--curves", str(work_dir), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "curves.png").is_file()


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"history": []})])
def test_missing_or_invalid_metrics_give_one_line_and_exit_2(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "metrics.json").write_text(content)
    assert main(["visualize", "--curves", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("argv", [["visualize"], ["visualize", "x.png", "--curves", "."]])
def test_exactly_one_mode_is_a_usage_error(argv, capsys):
    assert main(argv) == 2
    assert "--curves" in capsys.readouterr().err


@pytest.mark.parametrize("k", [5, 120])
def test_confusion_figure_writes_a_png(tmp_path, k):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 3, (k, k)) + np.diag(rng.integers(5, 20, k))
    matrix[-1] = 0  # a class absent from the test set stays an empty row, not a division by zero
    path = save_figure(confusion_figure(matrix, [f"class {i}" for i in range(k)]), tmp_path / "deep" / "cm.png")
    _assert_real_picture(path, min_width=600)
    assert [p.name for p in path.parent.iterdir()] == ["cm.png"]  # no temporary file left behind
