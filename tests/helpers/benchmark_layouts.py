"""Tiny copies of NABirds, Stanford Dogs, Flowers-102, Oxford-IIIT Pets and iNaturalist 2021 in their published layouts.

Exact file names and formats: NABirds' UUID-keyed text files with non-contiguous class ids
and a hierarchy, Dogs' and Flowers' MATLAB files (written with scipy, as MATLAB cells and
column vectors), Pets' annotation lists, iNat's COCO-style JSON. Each ``make_*`` writes under
``root`` and returns the dataset folder; images come from ``tests.helpers.datasets`` (the first
training image of class 0 grayscale, of class 1 CMYK, as the real sets have).
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import scipy.io

from tests.helpers.datasets import special_mode, write_image

#: NABirds: (leaf id, name, parent id); the ids skip numbers, as the real classes.txt does.
NABIRDS_LEAVES = ((295, "Mallard (Male)", 100), (313, "Mallard (Female/Juvenile)", 100), (817, "Wood Duck", 101),
                  (1010, "Snow Goose", 102))
NABIRDS_GROUPS = ((0, "Birds", None), (1, "Ducks, Geese, and Swans", 0), (100, "Mallard", 1), (101, "Wood Duck", 1),
                  (102, "Snow Goose", 1))
DOG_BREEDS = ("n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog", "n02086079-Pekinese")
#: Pets image stems (breed names as in the published files: cats capitalised, dogs lower case).
PET_BREEDS = (("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1), ("beagle", 2))
INAT_SPECIES = (("Animalia", "Chordata", "Aves", "Anseriformes", "Anatidae", "Anas", "platyrhynchos", "Mallard"),
                ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina", "Dog-Rose"),
                ("Fungi", "Basidiomycota", "Agaricomycetes", "Agaricales", "Amanitaceae", "Amanita", "muscaria",
                 "Fly Agaric"))


def make_nabirds(root: Path, num_classes: int = 3, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``root/nabirds`` with images.txt, image_class_labels.txt, train_test_split.txt, classes.txt,
    hierarchy.txt and bounding_boxes.txt keyed by UUIDs, and ``images/NNNN/<uuid hex>.jpg``."""
    folder = Path(root) / "nabirds"
    leaves = NABIRDS_LEAVES[:num_classes]
    rows: dict[str, list[str]] = {"images": [], "image_class_labels": [], "train_test_split": [], "bounding_boxes": []}
    seed = 0
    for label, (class_id, _, _) in enumerate(leaves):
        for index in range(train_per_class + test_per_class):
            seed += 1
            image = uuid.UUID(int=seed)
            relative = f"{class_id:04d}/{image.hex}.jpg"
            write_image(folder / "images" / relative, label, seed, special_mode(label, index, index < train_per_class))
            rows["images"].append(f"{image} {relative}")
            rows["image_class_labels"].append(f"{image} {class_id}")
            rows["train_test_split"].append(f"{image} {int(index < train_per_class)}")
            rows["bounding_boxes"].append(f"{image} 1 1 40 30")
    for name, lines in rows.items():
        write_lines(folder / f"{name}.txt", lines)
    nodes = sorted(NABIRDS_GROUPS + leaves, key=lambda node: node[0])
    write_lines(folder / "classes.txt", [f"{class_id} {name}" for class_id, name, _ in nodes])
    write_lines(folder / "hierarchy.txt", [f"{node} {parent}" for node, _, parent in nodes if parent is not None])
    return folder


def make_dogs(root: Path, num_classes: int = 3, train_per_class: int = 2, test_per_class: int = 1,
              lists: str = "lists") -> Path:
    """``root/stanford_dogs`` with ``Images/<wnid>-<breed>/``, ``Annotation/`` and ``lists``'s
    ``train_list.mat``/``test_list.mat`` (``file_list``, ``annotation_list``, ``labels``)."""
    folder = Path(root) / "stanford_dogs"
    split_rows: dict[bool, list[tuple[str, int]]] = {True: [], False: []}
    seed = 0
    for label, breed in enumerate(DOG_BREEDS[:num_classes]):
        wnid = breed.split("-", 1)[0]
        for index in range(train_per_class + test_per_class):
            seed += 1
            stem = f"{wnid}_{1000 + seed}"
            train = index < train_per_class
            write_image(folder / "Images" / breed / f"{stem}.jpg", label, seed, special_mode(label, index, train))
            (folder / "Annotation" / breed).mkdir(parents=True, exist_ok=True)
            (folder / "Annotation" / breed / stem).write_text(f"<annotation><filename>{stem}</filename></annotation>")
            split_rows[train].append((f"{breed}/{stem}.jpg", label + 1))
    for train, rows in split_rows.items():
        save_dog_list(folder / lists / f"{'train' if train else 'test'}_list.mat", rows)
    return folder


def save_dog_list(path: Path, rows: list[tuple[str, int]]) -> None:
    """A split list as lists.tar has it: N×1 cells of file and annotation names, N×1 double labels."""
    files = np.empty((len(rows), 1), dtype=object)
    annotations = np.empty((len(rows), 1), dtype=object)
    for i, (name, _) in enumerate(rows):
        files[i, 0], annotations[i, 0] = name, name.removesuffix(".jpg")
    labels = np.array([[float(label)] for _, label in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"file_list": files, "annotation_list": annotations, "labels": labels})


def make_flowers(root: Path, num_classes: int = 3, per_split: int = 1, test_per_class: int = 2) -> Path:
    """``root/flowers-102`` with ``jpg/image_NNNNN.jpg``, ``imagelabels.mat`` (1×N labels) and
    ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1×n image ids), ``per_split`` train and val images a class."""
    folder = Path(root) / "flowers-102"
    labels: list[int] = []
    ids: dict[str, list[int]] = {"trnid": [], "valid": [], "tstid": []}
    for label in range(num_classes):
        for key, count in (("trnid", per_split), ("valid", per_split), ("tstid", test_per_class)):
            for index in range(count):
                labels.append(label + 1)
                image_id = len(labels)
                mode = special_mode(label, index, key == "trnid")
                write_image(folder / "jpg" / f"image_{image_id:05d}.jpg", label, image_id, mode)
                ids[key].append(image_id)
    scipy.io.savemat(str(folder / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(str(folder / "setid.mat"), {key: np.array([value], dtype=np.uint16) for key, value in ids.items()})
    return folder


def make_pets(root: Path, num_classes: int = 3, trainval_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``root/oxford-iiit-pet`` with ``images/<Breed>_<n>.jpg`` and ``annotations/{trainval,test,list}.txt``."""
    folder = Path(root) / "oxford-iiit-pet"
    rows: dict[str, list[str]] = {"trainval": [], "test": []}
    seed = 0
    for label, (breed, species) in enumerate(PET_BREEDS[:num_classes]):
        for index in range(trainval_per_class + test_per_class):
            seed += 1
            stem = f"{breed}_{index + 1}"
            train = index < trainval_per_class
            write_image(folder / "images" / f"{stem}.jpg", label, seed, special_mode(label, index, train))
            rows["trainval" if train else "test"].append(f"{stem} {label + 1} {species} {index + 1}")
    header = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
    for name, lines in rows.items():
        write_lines(folder / "annotations" / f"{name}.txt", lines)
    write_lines(folder / "annotations" / "list.txt", header + rows["trainval"] + rows["test"])
    return folder


def make_inat21(root: Path, num_classes: int = 3, train_per_class: int = 2, val_per_class: int = 1) -> Path:
    """``root/inat2021`` with ``train_mini/`` and ``val/`` (``NNNNN_Kingdom_..._epithet/<uuid>.jpg``) and
    ``train_mini.json``/``val.json`` (images, annotations, categories as the 2021 README describes)."""
    folder = Path(root) / "inat2021"
    categories = []
    for class_id, (*ranks, epithet, common) in enumerate(INAT_SPECIES[:num_classes]):
        directory = "_".join([f"{class_id:05d}", *ranks, epithet])
        categories.append({"id": class_id, "name": f"{ranks[-1]} {epithet}", "common_name": common,
                           "supercategory": ranks[2], **dict(zip(("kingdom", "phylum", "class", "order", "family",
                                                                  "genus"), ranks)),
                           "specific_epithet": epithet, "image_dir_name": directory})
    seed = 0
    for split, count in (("train_mini", train_per_class), ("val", val_per_class)):
        images, annotations = [], []
        for category in categories:
            for index in range(count):
                seed += 1
                name = f"{split}/{category['image_dir_name']}/{uuid.UUID(int=seed)}.jpg"
                mode = special_mode(category["id"], index, split == "train_mini")
                write_image(folder / name, category["id"], seed, mode)
                images.append({"id": seed, "width": 48, "height": 40, "file_name": name, "license": 1,
                               "rights_holder": "someone", "date": "2020-06-01 10:00:00", "latitude": None,
                               "longitude": None, "location_uncertainty": None})
                annotations.append({"id": seed, "image_id": seed, "category_id": category["id"]})
        document = {"info": {"year": 2021, "version": "1.0"}, "images": images, "categories": categories,
                    "annotations": annotations, "licenses": [{"id": 1, "name": "CC BY", "url": ""}]}
        (folder / f"{split}.json").write_text(json.dumps(document))
    return folder


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
