"""predict streams (--jsonl, --out, stdin) in input order with flat memory; eval --out shows where it goes wrong."""
from __future__ import annotations

import csv
import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cncnn_cli.apis.inference import Predictor
from cncnn_cli.cli.main import main
from cncnn_cli.data.images import iter_images
from cncnn_cli.models.classifier import build_model
from cncnn_cli.weights.checkpoint import Checkpoint, save_checkpoint
from tests.helpers import datasets as fixtures
from tests.helpers.datasets import random_pngs


def test_jsonl_gives_one_parseable_line_per_image_in_input_order(tmp_path, cncnn_checkpoint, capsys):
    paths = random_pngs(tmp_path / "photos", 7)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    order = [paths[3], broken, tmp_path / "photos", paths[0]]
    code = main(["predict", *map(str, order), "--checkpoint", str(cncnn_checkpoint), "--jsonl",
                 "--batch-size", "3", "--topk", "2"])
    captured = capsys.readouterr()
    assert code == 2  # one unreadable image, as with --json
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["image"] for line in lines] == [str(paths[3]), str(broken), *map(str, paths), str(paths[0])]
    assert "error" in lines[1] and "predictions" not in lines[1]
    assert all(len(line["predictions"]) == 2 for i, line in enumerate(lines) if i != 1)
    assert captured.err.count("error:") == 1


def test_stdin_paths_and_out_files_stream_the_same_results(tmp_path, cncnn_checkpoint, capsys, monkeypatch):
    paths = random_pngs(tmp_path / "photos", 5)
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{p}\n" for p in paths) + "\n"))
    out = tmp_path / "results" / "predictions.jsonl"
    assert main(["predict", "-", "--checkpoint", str(cncnn_checkpoint), "--out", str(out), "--topk", "3"]) == 0
    assert capsys.readouterr().out == ""  # --out alone writes the file, not a table
    from_stdin = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["image"] for line in from_stdin] == list(map(str, paths))
    table = tmp_path / "predictions.csv"
    assert main(["predict", str(tmp_path / "photos"), "--checkpoint", str(cncnn_checkpoint), "--out", str(table),
                 "--topk", "3", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)  # --json stays one clean document beside --out
    rows = list(csv.DictReader(table.open()))
    assert [row["image"] for row in rows] == [entry["image"] for entry in document] == list(map(str, paths))
    for row, entry, line in zip(rows, document, from_stdin):
        assert row["label_1"] == entry["predictions"][0]["label"] == line["predictions"][0]["label"]
        assert float(row["score_3"]) == pytest.approx(line["predictions"][2]["score"], abs=1e-6)
        assert row["error"] == ""


def test_bad_streaming_flags_are_one_line_each(tmp_path, cncnn_checkpoint, capsys):
    image = random_pngs(tmp_path, 1)[0]
    assert main(["predict", str(image), "--checkpoint", str(cncnn_checkpoint), "--json", "--jsonl"]) == 2
    assert main(["predict", str(image), "--checkpoint", str(cncnn_checkpoint), "--out", "x.txt"]) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line] == [
        "error: give either --json (one document) or --jsonl (one line per image), not both",
        "error: --out x.txt: expected a .jsonl or .csv file",
    ]


def test_a_folder_of_2000_images_is_walked_lazily_and_predicted_with_flat_memory(tmp_path, cncnn_checkpoint):
    folder = tmp_path / "many"
    random_pngs(folder, 2000, size=8)
    walk = iter_images(folder)
    assert next(walk) == folder / "img_00000.png"  # the first path comes before the folder is listed whole
    predictor = Predictor.from_checkpoint(cncnn_checkpoint, device="cpu")
    # The pipeline's memory is under test, not the network's speed: a constant forward keeps it quick.
    predictor.forward = lambda batch: {"logits": torch.zeros(batch.shape[0], len(predictor.classes))}
    results = predictor.iter_predict(iter_images(folder), topk=1, batch_size=50)
    for _ in range(100):  # warm up allocator caches and the model
        next(results)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        count = 100 + sum(1 for _ in results)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert count == 2000
    assert grown < 500_000  # measured: about 0.13 MB streamed; keeping the 2,000 results takes about 1.1 MB

    consumed = []
    first = next(predictor.iter_predict((consumed.append(p) or p for p in iter_images(folder)), batch_size=50))
    assert first.image == str(folder / "img_00000.png") and len(consumed) == 50  # one batch read, not the folder


@pytest.fixture()
def eval_data(tmp_path) -> Path:
    return fixtures.make_imagefolder(tmp_path / "data", classes=("a", "b", "c", "d", "e"),
                                     counts={"train": 1, "test": 4})


def test_eval_out_writes_a_gallery_of_mistakes_predictions_and_worst_first_classes(tmp_path, cncnn_checkpoint,
                                                                                   eval_data, capsys):
    out = tmp_path / "report"
    assert main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(eval_data),
                 "--workers", "0", "--out", str(out), "--mistakes", "6", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == document["num_images"] == 20
    accuracy = 100 * sum(p["correct"] for p in predictions) / len(predictions)
    assert accuracy == pytest.approx(document["top1"])
    assert all(p["correct"] == (p["label"] == p["predicted"]) for p in predictions)
    rows = list(csv.DictReader((out / "per_class.csv").open()))
    accuracies = [float(row["accuracy"]) for row in rows]
    assert accuracies == sorted(accuracies) and len(rows) == 5
    gallery = Image.open(out / "errors.png")
    pixels = np.asarray(gallery.convert("RGB"), dtype=np.float32)
    assert gallery.width > 600 and gallery.height > 300 and pixels.std() > 20  # pictures, not a blank page
    assert (out / "confusion.png").is_file()


def test_eval_mistakes_are_the_most_confident_wrong_ones_with_masks(cncnn_checkpoint, eval_data):
    from cncnn_cli.evaluation.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(cncnn_checkpoint, dataset="imagefolder", data_root=str(eval_data), workers=0,
                                 mistakes=4)
    probs = torch.softmax(result.logits, 1)
    scores, predicted = probs.max(1)
    wrong = sorted((float(scores[i]) for i in range(len(scores)) if predicted[i] != result.labels[i]), reverse=True)
    assert [m.score for m in result.mistakes] == pytest.approx(wrong[:4])
    assert all(m.predicted != m.label and m.image.shape == (64, 64, 3) and m.image.dtype == np.uint8
               for m in result.mistakes)
    assert all(m.mask is not None and m.mask.ndim == 3 for m in result.mistakes)  # SA3, 1×h×w


def test_a_model_without_attention_maps_gets_the_gallery_without_overlays(tmp_path, eval_data, capsys):
    model_cfg = dict(type="baseline", num_classes=5, backbone=dict(type="resnet18", pretrained=None))
    path = tmp_path / "baseline.safetensors"
    save_checkpoint(path, build_model(model_cfg).state_dict(),
                    Checkpoint(model=model_cfg, classes=list("abcde"), preprocess={"resize": 40, "crop": 32}))
    out = tmp_path / "report"
    assert main(["eval", str(path), "--dataset", "imagefolder", "--data-root", str(eval_data), "--workers", "0",
                 "--out", str(out)]) == 0
    assert Image.open(out / "errors.png").width > 300
