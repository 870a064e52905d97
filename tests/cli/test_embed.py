"""`cncnn embed`, `Predictor.embed` and `cncnn eval --retrieval`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from cncnn_cli.apis.inference import Predictor
from cncnn_cli.cli.main import main
from cncnn_cli.evaluation.retrieval import retrieval_metrics
from cncnn_cli.models.embedding import EmbeddingCapture, final_linears
from cncnn_cli.weights.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from tests.helpers.datasets import make_imagefolder, write_image

CLASSES = ("a", "b", "c", "d", "e")


@pytest.fixture
def photos(tmp_path):
    return [write_image(tmp_path / "photos" / f"{i}.jpg", i % 3, i) for i in range(5)]


def test_files_to_npy_and_safetensors_match_the_python_api(tmp_path, cncnn_checkpoint, photos, capsys):
    npy, st = tmp_path / "out" / "e.npy", tmp_path / "out" / "e.safetensors"
    for out in (npy, st):
        assert main(["embed", str(tmp_path / "photos"), "--checkpoint", str(cncnn_checkpoint), "--out", str(out),
                     "--batch-size", "2"]) == 0
    expected = torch.stack([e.vector for e in Predictor.from_checkpoint(cncnn_checkpoint, "cpu").embed(photos)])
    matrix = np.load(npy)
    with safe_open(str(st), "pt") as handle:
        assert handle.metadata()["embedding"] == "penultimate"
        assert torch.equal(handle.get_tensor("embeddings"), torch.from_numpy(matrix))
    assert matrix.shape == (5, 4 * 16)  # four classifiers' 16-wide penultimate features
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    assert torch.allclose(torch.from_numpy(matrix), expected, atol=1e-5)
    index = [json.loads(line) for line in (tmp_path / "out" / "e.jsonl").read_text().splitlines()]
    assert [line["index"] for line in index] == list(range(5))
    assert [line["image"] for line in index] == [str(p) for p in photos]
    assert not list((tmp_path / "out").glob("*.part"))


def test_penultimate_is_the_input_of_each_final_classifier_layer(cncnn_checkpoint):
    predictor = Predictor.from_checkpoint(cncnn_checkpoint, "cpu")
    model, images = predictor.model, torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    layers = final_linears(model, 5)
    assert layers == [model.head.cls3[-1], model.head.cls4[-1], model.head.cls5[-1], model.head.concat[-1]]
    with EmbeddingCapture(model, "penultimate", 5) as capture:
        predictor.forward(images)
        got = capture.take()
    inputs = model.data_preprocessor({"inputs": images}, False)["inputs"]
    outputs = model(inputs, mode="tensor")
    fused = model.fusion(model.backbone(inputs))
    pooled = torch.cat([torch.nn.functional.adaptive_avg_pool2d(f, 1) for f in fused], 1)
    parts = [model.head.cls3[:-1](outputs["attended"][0]), model.head.cls4[:-1](outputs["attended"][1]),
             model.head.cls5[:-1](outputs["attended"][2]), model.head.concat[:-1](pooled)]
    want = torch.nn.functional.normalize(torch.cat([torch.nn.functional.normalize(p, dim=1) for p in parts], 1), dim=1)
    assert torch.allclose(got, want, atol=1e-5)


def test_the_checkpoint_names_its_embedding(tmp_path, cncnn_checkpoint, photos, capsys):
    info, weights = read_checkpoint(cncnn_checkpoint)
    attended = tmp_path / "attended.safetensors"
    save_checkpoint(attended, weights, Checkpoint(**{**info.__dict__, "embedding": "attended"}))
    assert main(["embed", str(photos[0]), "--checkpoint", str(attended), "--jsonl"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert len(line["embedding"]) == 3 * 32  # three attended maps of 32 channels, pooled


def test_a_dataset_split_with_labels_and_eval_retrieval_agree(tmp_path, cncnn_checkpoint, capsys):
    root = make_imagefolder(tmp_path, CLASSES, {"train": 1, "test": 3})
    out = tmp_path / "test.npy"
    assert main(["embed", "--dataset", "imagefolder", "--data-root", str(root), "--checkpoint",
                 str(cncnn_checkpoint), "--out", str(out), "--workers", "0"]) == 0
    index = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [line["label"] for line in index] == [name for name in CLASSES for _ in range(3)]
    capsys.readouterr()
    assert main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(root),
                 "--retrieval", "--json", "--workers", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = torch.tensor([CLASSES.index(line["label"]) for line in index])
    expected = retrieval_metrics(torch.from_numpy(np.load(out)), labels)
    assert report["retrieval"] == pytest.approx({"embedding": "penultimate", **expected})
    assert set(report["calibration"]) == {"plain", "calibrated"} and report["calibration"]["calibrated"] is None


@pytest.mark.parametrize("argv, message", [
    (["IMG"], "give --out FILE.npy|FILE.safetensors, --jsonl, or both"),
    (["IMG", "--out", "x.csv"], "--out x.csv: expected a .npy or .safetensors file"),
    (["IMG", "--split", "test", "--jsonl"], "give either images"),
    (["--jsonl"], "nothing to embed"),
])
def test_bad_embed_flags_are_one_line_each(tmp_path, cncnn_checkpoint, photos, capsys, argv, message):
    argv = [str(photos[0]) if arg == "IMG" else arg for arg in argv]
    assert main(["embed", *argv, "--checkpoint", str(cncnn_checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_unreadable_image_gets_an_error_line_and_no_row(tmp_path, cncnn_checkpoint, photos, capsys):
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "e.npy"
    assert main(["embed", str(photos[0]), str(broken), "--checkpoint", str(cncnn_checkpoint), "--out", str(out)]) == 2
    assert np.load(out).shape[0] == 1
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert "error" in lines[1] and "index" not in lines[1]


def test_out_never_replaces_the_checkpoint(tmp_path, cncnn_checkpoint, photos, capsys):
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(cncnn_checkpoint.read_bytes())
    assert main(["embed", str(photos[0]), "--checkpoint", str(copy), "--out", str(copy)]) == 2
    assert main(["gallery", "build", str(tmp_path / "photos"), "--checkpoint", str(copy), "--out", str(copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("writing it would replace the file it is made from" in line for line in err)
    assert copy.read_bytes() == cncnn_checkpoint.read_bytes()
