"""Datasets read their published layouts; bad files cost one sample; the demo set is deterministic."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cncnn_cli.data.collate import collate
from cncnn_cli.errors import CncnnError
from cncnn_cli.data.images import load_rgb
from cncnn_cli.registry import DATASETS, describe
from cncnn_cli.data.transforms import build_transform
from cncnn_plugins.datasets import Demo, UnreadableImageWarning, build_dataset
from cncnn_cli.data.dataset import decode
from tests.helpers.datasets import (
    make_aircraft,
    make_cars,
    make_cars_annos,
    make_cub,
    make_imagefolder,
    truncate,
)

TRANSFORM = build_transform({"resize": 36, "crop": 32}, train=False)


def labels(dataset) -> list[int]:
    return [label for _, label in dataset.samples]


def test_every_dataset_is_registered_with_a_description():
    for name in ("cub", "cars", "aircraft", "imagefolder", "demo"):
        cls = DATASETS.get(name)
        assert cls is not None and cls.name == name
        assert describe(cls) != "(no description)"


@pytest.mark.parametrize("use_parent", [False, True])
def test_cub_counts_labels_and_names(tmp_path, use_parent):
    folder = make_cub(tmp_path, num_classes=3, train_per_class=2, test_per_class=1)
    root = str(folder.parent if use_parent else folder)
    train, test = build_dataset("cub", root, "train"), build_dataset("cub", root, "test")
    assert train.classes == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert (len(train), len(test)) == (6, 3)
    assert labels(train) == [0, 0, 1, 1, 2, 2] and labels(test) == [0, 1, 2]
    assert all("/images/00" in path for path, _ in train.samples)


def test_cars_devkit_folder_may_have_any_name(tmp_path):
    folder = make_cars(tmp_path, num_classes=3, train_per_class=2, test_per_class=1)
    renamed = folder.rename(tmp_path / "cars")
    assert labels(build_dataset("cars", str(renamed), "test")) == [0, 1, 2]
    assert labels(build_dataset("cars", str(tmp_path), "test")) == [0, 1, 2]  # or the folder holding it
    with pytest.raises(CncnnError, match="neither devkit/"):
        build_dataset("cars", str(tmp_path / "cars" / "cars_train"))


@pytest.mark.parametrize("use_parent", [False, True])
def test_aircraft_splits_and_annotation_levels(tmp_path, use_parent):
    folder = make_aircraft(tmp_path, num_classes=3, train_per_class=2, val_per_class=1, test_per_class=1)
    root = str(folder.parent if use_parent else folder)
    train = build_dataset("aircraft", root, "train")
    assert train.classes == ["707-320", "A320", "F/A-18"]
    assert len(train) == 9  # cncnn's train is FGVC's trainval by default
    assert len(build_dataset("aircraft", root, "train", train_split="train")) == 6
    assert [len(build_dataset("aircraft", root, s)) for s in ("val", "trainval", "test")] == [3, 9, 3]
    family = build_dataset("aircraft", root, "test", annotation_level="family")
    assert family.classes == ["A320", "Boeing 707", "F/A-18"] and labels(family) == [1, 0, 2]
    maker = build_dataset("aircraft", root, "test", annotation_level="manufacturer")
    assert maker.classes == ["Airbus", "Boeing", "McDonnell Douglas"] and labels(maker) == [1, 0, 2]


def test_aircraft_crops_the_banner_on_both_decode_paths(tmp_path):
    root = str(make_aircraft(tmp_path))
    assert build_dataset("aircraft", root, "test")[0]["inputs"].size == (48, 20)
    identity = build_dataset("aircraft", root, "test", transform=lambda image: image)
    assert identity[0]["inputs"].shape == (3, 20, 48)
    assert build_dataset("aircraft", root, "test", crop_banner=False)[0]["inputs"].size == (48, 40)


def test_imagefolder_takes_classes_from_train(tmp_path):
    root = make_imagefolder(tmp_path, classes=("cat", "dog", "owl"), counts={"train": 2, "val": 1})
    (root / "val" / "owl" / "owl_0.jpg").unlink()
    (root / "val" / "owl").rmdir()
    val = build_dataset("imagefolder", str(root), "val")
    assert val.classes == ["cat", "dog", "owl"] and labels(val) == [0, 1]
    (root / "val" / "zebra").mkdir()
    with pytest.raises(CncnnError, match="zebra"):
        build_dataset("imagefolder", str(root), "val")


def test_samples_are_rgb_whatever_the_file_mode(tmp_path):
    dataset = build_dataset("cub", str(make_cub(tmp_path)), "train")
    gray, cmyk = dataset.samples[0][0], dataset.samples[2][0]
    assert Image.open(gray).mode == "L" and Image.open(cmyk).mode == "CMYK"
    for index in (0, 2):
        item = dataset[index]
        assert item["inputs"].mode == "RGB" and item["data_samples"] == labels(dataset)[index]
    dataset.transform = TRANSFORM
    item = dataset[2]
    assert item["inputs"].dtype == torch.uint8 and item["inputs"].shape == (3, 32, 32)
    assert item["path"] == cmyk
    for path in (gray, cmyk):  # the JPEG fast path decodes exactly as PIL does
        assert torch.equal(decode(path, as_tensor=True), torch.from_numpy(np.array(load_rgb(path))).permute(2, 0, 1))


def test_unreadable_image_gives_none_warns_once_and_is_dropped_by_collate(tmp_path):
    dataset = build_dataset("cub", str(make_cub(tmp_path)), "train", transform=TRANSFORM)
    broken = truncate(Path(dataset.samples[1][0]))
    with pytest.warns(UnreadableImageWarning, match=broken.name):
        assert dataset[1] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset[1] is None  # once per file
        batch = collate([dataset[i] for i in range(4)])
    assert batch["skipped"] == 1
    assert batch["inputs"].shape == (3, 3, 32, 32) and batch["inputs"].dtype == torch.uint8
    assert batch["data_samples"].tolist() == [0, 1, 1] and batch["data_samples"].dtype == torch.int64
    assert batch["paths"] == [dataset.samples[i][0] for i in (0, 2, 3)]  # the survivors, named for reports


def test_collate_of_only_bad_items_is_an_empty_batch():
    batch = collate([None, None])
    assert batch["skipped"] == 2 and batch["inputs"].shape == (0, 3, 0, 0) and batch["data_samples"].numel() == 0


@pytest.mark.parametrize(
    ("maker", "name", "removed"),
    [
        (make_cub, "cub", "image_class_labels.txt"),
        (make_cars, "cars", "devkit/cars_meta.mat"),
        (make_cars_annos, "cars", "car_ims"),
        (make_aircraft, "aircraft", "data/images_variant_trainval.txt"),
        (make_imagefolder, "imagefolder", "train"),
    ],
)
def test_missing_annotation_file_is_named(tmp_path, maker, name, removed):
    folder = maker(tmp_path)
    target = folder / removed
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(CncnnError) as error:
        build_dataset(name, str(folder), "train")
    assert str(target) in str(error.value) and error.value.exit_code == 2
    assert "\n" not in str(error.value)


def test_bad_split_and_option_are_clear_errors(tmp_path):
    root = str(make_cub(tmp_path))
    with pytest.raises(CncnnError, match="unknown split 'val'"):
        build_dataset("cub", root, "val")
    with pytest.raises(CncnnError, match="annotation_level"):
        build_dataset("cub", root, "train", annotation_level="family")
    with pytest.raises(CncnnError, match="unknown dataset 'birds'"):
        build_dataset("birds", root)


def test_demo_is_deterministic_balanced_and_disjoint():
    options = dict(train_per_class=2, test_per_class=1, image_size=48)
    first = Demo(split="train", transform=TRANSFORM, seed=3, **options)
    again = Demo(split="train", transform=TRANSFORM, seed=3, **options)
    other = Demo(split="train", transform=TRANSFORM, seed=4, **options)
    test = Demo(split="test", transform=TRANSFORM, seed=3, **options)
    assert len(first.classes) == 10 and len(set(first.classes)) == 10
    assert len(first) == 20 and len(test) == 10 and sorted(labels(first)) == sorted(list(range(10)) * 2)
    for index in (0, 7):
        assert torch.equal(first[index]["inputs"], again[index]["inputs"])
        assert not torch.equal(first[index]["inputs"], other[index]["inputs"])
        assert not torch.equal(first[index]["inputs"], test[index]["inputs"])
    raw = Demo(num_classes=4, image_size=40, train_per_class=1)
    assert raw[0]["inputs"].size == (40, 40)
    assert raw.classes == ["red crown", "yellow crown", "green crown", "blue crown"]
