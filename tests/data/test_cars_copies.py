"""The Stanford Cars copies people have: each layout loads; data check names what a copy lacks or adds."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cncnn_cli.cli.data import app
from cncnn_cli.errors import CncnnError
from cncnn_plugins.datasets import StanfordCarsDataset, build_dataset
from tests.helpers.datasets import (
    CAR_CLASSES,
    _save_struct,
    make_cars,
    make_cars_annos,
    make_cars_class_folders,
    make_cars_repackaged,
    write_image,
)

SIZES = {"num_classes": 3, "train_per_class": 2, "test_per_class": 1}
LABELS = "cars_test_annos_withlabels.mat"

#: Each copy as a function of tmp_path returning the --data-root to pass and the test images' folder.
COPIES = {
    "torchvision": lambda tmp: (make_cars(tmp, **SIZES), "stanford_cars/cars_test"),
    "torchvision, parent as root": lambda tmp: (make_cars(tmp, **SIZES).parent, "stanford_cars/cars_test"),
    "car_ims + cars_annos.mat": lambda tmp: (make_cars_annos(tmp, **SIZES), "stanford_cars/car_ims"),
    "kaggle, car_devkit/devkit": lambda tmp: (make_cars_repackaged(tmp, **SIZES), "cars_test/cars_test"),
    "kaggle, devkit": lambda tmp: (make_cars_repackaged(tmp, devkit="devkit", **SIZES), "cars_test/cars_test"),
    "kaggle, labels in a sub-folder": lambda tmp: (
        make_cars_repackaged(tmp, labels_in="downloads/labels", **SIZES),
        "cars_test/cars_test",
    ),
    "kaggle, any name, parent as root": lambda tmp: (
        make_cars_repackaged(tmp, name="archive", **SIZES).parent,
        "archive/cars_test/cars_test",
    ),
    "kaggle named stanford_cars, parent as root": lambda tmp: (
        make_cars_repackaged(tmp, name="stanford_cars", **SIZES).parent,
        "stanford_cars/cars_test/cars_test",
    ),
}

runner = CliRunner()


def check(*args: str):
    return runner.invoke(app, ["check", "--dataset", "cars", *args])


def labels(dataset) -> list[int]:
    return [label for _, label in dataset.samples]


@pytest.mark.parametrize("copy", COPIES)
def test_every_copy_loads_with_published_classes_counts_and_labels(tmp_path, copy):
    root, test_images = COPIES[copy](tmp_path)
    train, test = build_dataset("cars", str(root), "train"), build_dataset("cars", str(root), "test")
    assert train.classes == test.classes == list(CAR_CLASSES[:3])
    assert labels(train) == [0, 0, 1, 1, 2, 2] and labels(test) == [0, 1, 2]
    assert all(f"/{test_images}/" in path for path, _ in test.samples)
    train_images = test_images.replace("cars_test", "cars_train")  # car_ims/ holds both splits
    assert all(f"/{train_images}/" in path for path, _ in train.samples)


def test_shallowest_labels_file_wins_and_the_search_is_bounded(tmp_path):
    folder = make_cars_repackaged(tmp_path, labels_in="labels", **SIZES)
    decoy = [{"class": 3, "fname": f"{i:05d}.jpg"} for i in (1, 2, 3)]
    _save_struct(folder / "old" / "backup" / "copy" / LABELS, decoy)
    assert labels(build_dataset("cars", str(folder), "test")) == [0, 1, 2]
    (folder / "labels" / LABELS).unlink()
    (folder / "old" / "backup" / "copy" / LABELS).unlink()
    _save_struct(folder / "a" / "b" / "c" / "d" / LABELS, decoy)  # four levels down: not looked at
    with pytest.raises(CncnnError, match=LABELS):
        build_dataset("cars", str(folder), "test")


def test_missing_test_labels_are_a_one_line_error_but_train_loads(tmp_path):
    folder = make_cars_repackaged(tmp_path, labels_in=None, **SIZES)
    assert len(build_dataset("cars", str(folder), "train")) == 6
    with pytest.raises(CncnnError) as error:
        build_dataset("cars", str(folder), "test")
    message = str(error.value)
    assert LABELS in message and str(folder) in message and "\n" not in message
    assert str(folder / "car_devkit" / "devkit" / "cars_test_annos.mat") in message and "no class labels" in message
    assert error.value.exit_code == 2
    torchvision = make_cars(tmp_path / "tv", **SIZES)
    (torchvision / LABELS).unlink()
    with pytest.raises(CncnnError, match=r"unlabelled cars_test_annos\.mat has no class labels"):
        build_dataset("cars", str(torchvision), "test")


def test_class_folder_copy_loads_through_imagefolder(tmp_path):
    root = str(make_cars_class_folders(tmp_path, num_classes=3, train_per_class=2, test_per_class=1))
    train, test = build_dataset("imagefolder", root, "train"), build_dataset("imagefolder", root, "test")
    assert train.classes == sorted(CAR_CLASSES[:3])
    assert (len(train), len(test)) == (6, 3)
    assert labels(train) == [0, 0, 1, 1, 2, 2] and labels(test) == [0, 1, 2]


def test_deleted_test_image_is_named_and_exits_1(tmp_path):
    folder = make_cars_repackaged(tmp_path, **SIZES)
    gone = folder / "cars_test" / "cars_test" / "00002.jpg"
    gone.unlink()
    result = check("--data-root", str(folder), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    test = report["splits"]["test"]
    assert test["missing"] == [{"path": str(gone), "listed_in": str(folder / LABELS)}]
    assert test["unreadable"] == [] and report["splits"]["train"]["missing"] == []
    assert report["problems"] == [f"{gone}: listed in {LABELS}, file missing"]
    text = check("--data-root", str(folder))
    assert text.exit_code == 1 and f"{gone}: listed in {LABELS}, file missing" in text.stdout


def test_unannotated_image_is_listed_without_failing(tmp_path):
    folder = make_cars_repackaged(tmp_path, **SIZES)
    extra = write_image(folder / "cars_train" / "cars_train" / "09999.jpg", 0, 99)
    result = check("--data-root", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unlisted_files"] == [str(extra)]
    text = check("--data-root", str(folder))
    assert "1 image file(s) that no annotation mentions" in text.stdout and str(extra) in text.stdout


def test_shared_image_folder_lists_only_files_no_split_mentions(tmp_path):
    folder = make_cars_annos(tmp_path, **SIZES)
    assert json.loads(check("--data-root", str(folder), "--split", "train", "--json").stdout)["unlisted_files"] == []
    extra = write_image(folder / "car_ims" / "099999.jpg", 0, 99)
    report = json.loads(check("--data-root", str(folder), "--split", "test", "--json").stdout)
    assert report["unlisted_files"] == [str(extra)]


def test_counts_are_compared_with_the_published_dataset(tmp_path, monkeypatch):
    folder = make_cars(tmp_path, **SIZES)
    result = check("--data-root", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["differences_from_published"] == [
        "split 'train': 6 images, published 8,144 (8,138 fewer)",
        "split 'test': 3 images, published 8,041 (8,038 fewer)",
        "classes: 3 classes, published 196 (193 fewer)",
    ]
    assert "3 difference(s) from the published dataset" in check("--data-root", str(folder)).stdout
    monkeypatch.setattr(StanfordCarsDataset, "published", {"train": 5, "test": 3, "classes": 3})
    report = json.loads(check("--data-root", str(folder), "--json").stdout)
    assert report["differences_from_published"] == ["split 'train': 6 images, published 5 (1 more)"]
