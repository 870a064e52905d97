"""`cncnn gallery build` and `cncnn predict --gallery`: new classes without retraining."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from cncnn_cli.apis.gallery import class_means, load_gallery
from cncnn_cli.apis.inference import Predictor
from cncnn_cli.cli.main import main
from cncnn_cli.models.embedding import final_linears
from cncnn_cli.weights.checkpoint import load_model, save_checkpoint
from tests.helpers.datasets import make_imagefolder, write_image

TRAINED = ("a", "b", "c", "d", "e")


@pytest.fixture
def folders(tmp_path):
    root = tmp_path / "new"
    solo = write_image(root / "solo" / "only.jpg", 3, 100)
    many = [write_image(root / "many" / f"{i}.jpg", 4, 200 + i) for i in range(4)]
    return root, solo, many


@pytest.fixture
def trained_data(tmp_path):
    return make_imagefolder(tmp_path, TRAINED, {"train": 2, "test": 1})


def _build(root, out, checkpoint, *extra):
    return main(["gallery", "build", str(root), "--out", str(out), "--checkpoint", str(checkpoint), *extra])


def _predict(capsys, image, checkpoint, gallery, *extra) -> dict:
    capsys.readouterr()
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--json",
                 *extra]) == 0
    return json.loads(capsys.readouterr().out)[0]


def test_a_gallery_holds_embeddings_paths_and_class_means(tmp_path, cncnn_checkpoint, folders, trained_data, capsys):
    root, solo, many = folders
    out = tmp_path / "g.safetensors"
    assert _build(root, out, cncnn_checkpoint, "--dataset", "imagefolder", "--data-root", str(trained_data)) == 0
    gallery = load_gallery(out)
    assert gallery.classes == ["many", "solo"] and gallery.paths == [*map(str, many), str(solo)]
    predictor = Predictor.from_checkpoint(cncnn_checkpoint, "cpu")
    expected = torch.stack([e.vector for e in predictor.embed([*many, solo])])
    assert torch.allclose(gallery.embeddings, expected, atol=1e-5)
    assert torch.allclose(gallery.means[1], expected[4], atol=1e-5)  # a one-image class: its image
    assert torch.allclose(gallery.means.norm(dim=1), torch.ones(2), atol=1e-5)
    train = sorted((trained_data / "train").glob("*/*.jpg"))
    vectors = torch.stack([e.vector for e in predictor.embed(train)])
    labels = torch.tensor([TRAINED.index(p.parent.name) for p in train])
    assert torch.allclose(gallery.trained_means, class_means(vectors, labels, 5), atol=1e-5)


def test_extend_and_replace_rank_by_similarity_to_the_class_means(tmp_path, cncnn_checkpoint, folders, trained_data,
                                                                   capsys):
    root, solo, _ = folders
    out = tmp_path / "g.safetensors"
    assert _build(root, out, cncnn_checkpoint, "--dataset", "imagefolder", "--data-root", str(trained_data)) == 0
    extended = _predict(capsys, solo, cncnn_checkpoint, out, "--topk", "7")
    assert extended["predictions"][0]["label"] == "solo" and extended["predictions"][0]["score"] == pytest.approx(1)
    assert sorted(p["label"] for p in extended["predictions"]) == sorted([*(f"bird {i}" for i in range(5)), "many", "solo"])
    assert {p["source"] for p in extended["predictions"]} == {"trained", "gallery"}
    replaced = _predict(capsys, solo, cncnn_checkpoint, out, "--gallery-mode", "replace")
    assert [p["label"] for p in replaced["predictions"]] == ["solo", "many"]
    assert _predict(capsys, solo, cncnn_checkpoint, out, "--unknown-threshold", "1.01")["label"] == "unknown"
    known = _predict(capsys, solo, cncnn_checkpoint, out, "--unknown-threshold", "-1")
    assert known["label"] == "solo" and known["unknown"] is False


def test_a_csv_of_gallery_predictions_says_which_images_are_unknown(tmp_path, cncnn_checkpoint, folders,
                                                                    trained_data):
    root, solo, many = folders
    out = tmp_path / "g.safetensors"
    assert _build(root, out, cncnn_checkpoint, "--dataset", "imagefolder", "--data-root", str(trained_data)) == 0
    table = tmp_path / "r.csv"
    assert main(["predict", str(solo), str(many[0]), "--checkpoint", str(cncnn_checkpoint), "--gallery", str(out),
                 "--unknown-threshold", "0.9999", "--out", str(table)]) == 0
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [row["unknown"] for row in rows] == ["false", "true"]  # solo is its own class mean
    assert rows[0]["label_1"] == "solo" and rows[1]["error"] == ""


def test_holdout_fits_the_unknown_threshold_that_predict_then_uses(tmp_path, cncnn_checkpoint, folders, capsys):
    root, solo, many = folders
    out = tmp_path / "g.safetensors"
    assert _build(root, out, cncnn_checkpoint, "--holdout", "0.5", "--json") == 0
    threshold = json.loads(capsys.readouterr().out)["unknown_threshold"]
    # 'many' keeps 2 of its 4 images for the mean, holds out 2 ('solo' keeps its only one): the 5 % quantile
    # of the 2 held-out similarities.
    gallery = load_gallery(out)
    assert gallery.unknown_threshold == pytest.approx(threshold) and -1 <= threshold <= 1
    result = _predict(capsys, many[0], cncnn_checkpoint, out, "--gallery-mode", "replace")
    assert result["unknown"] == (result["predictions"][0]["score"] < threshold)


def _scaled(source, dst):
    model, info = load_model(source)
    for layer in final_linears(model, len(info.classes)):
        layer.weight.data *= 2
    save_checkpoint(dst, model.state_dict(), info)
    return dst


@pytest.mark.parametrize("case, message", [
    ("other_checkpoint", "was built with another checkpoint"),
    ("single_class_replace", "has a single class"),
    ("no_trained_means", "holds no means of the checkpoint's classes"),
    ("threshold_without_gallery", "--unknown-threshold applies to gallery predictions"),
    ("trained_name_extend", "is already a class of"),
])
def test_bad_gallery_use_is_one_line(tmp_path, cncnn_checkpoint, folders, capsys, case, message):
    root, solo, _ = folders
    if case == "single_class_replace":
        root = tmp_path / "one"
        write_image(root / "only" / "x.jpg", 0, 5)
    extra = []
    if case == "trained_name_extend":  # a new folder named like a trained class: one name, two classes
        write_image(root / "bird 0" / "x.jpg", 0, 6)
        extra = ["--dataset", "imagefolder", "--data-root", str(make_imagefolder(tmp_path, TRAINED, {"train": 1}))]
    out = tmp_path / "g.safetensors"
    assert _build(root, out, cncnn_checkpoint, *extra) == 0  # the converted checkpoint names no dataset: no trained means
    checkpoint = _scaled(cncnn_checkpoint, tmp_path / "other.safetensors") if case == "other_checkpoint" \
        else cncnn_checkpoint
    argv = ["predict", str(solo), "--checkpoint", str(checkpoint)]
    argv += {"other_checkpoint": ["--gallery", str(out), "--gallery-mode", "replace"],
             "single_class_replace": ["--gallery", str(out), "--gallery-mode", "replace"],
             "no_trained_means": ["--gallery", str(out)],
             "threshold_without_gallery": ["--unknown-threshold", "0.5"],
             "trained_name_extend": ["--gallery", str(out)]}[case]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_empty_class_folder_is_one_line_and_writes_nothing(tmp_path, cncnn_checkpoint, folders, capsys):
    root, _, _ = folders
    (root / "nothing").mkdir()
    out = tmp_path / "g.safetensors"
    assert _build(root, out, cncnn_checkpoint) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing: an empty class folder" in err[0], err
    assert not out.exists()
