"""Stanford Cars in either published layout: torchvision's devkit folders or car_ims/ + cars_annos.mat."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io
from torchvision.datasets import StanfordCars

from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .base import FineGrainedDataset, check_split, require

FOLDER = "stanford_cars"
DEVKIT_LAYOUT = (
    "stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
    "cars_test_annos_withlabels.mat, cars_train/, cars_test/}"
)
ANNOS_LAYOUT = "{cars_annos.mat, car_ims/*.jpg}"


@DATASETS.register_module(name="cars")
class StanfordCarsDataset(FineGrainedDataset):
    """Stanford Cars: 196 car models, 8,144 train / 8,041 test images.

    Two layouts are recognised in ``data_root`` or its ``stanford_cars/`` child:
    torchvision's (``devkit/``, read by ``torchvision.datasets.StanfordCars``; the folder
    must be named ``stanford_cars``) and the single-folder ``car_ims/`` + ``cars_annos.mat``,
    whose ``test`` flag makes the split.
    """

    name = "cars"

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", "test"))
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise CncnnError(f"data root {root} is not a directory: pass --data-root with the extracted "
                             f"dataset folder or its parent (README, Datasets)")
        for folder in (root, root / FOLDER):
            if (folder / "devkit").is_dir():
                self._read_devkit(folder, split)
                return
            if (folder / "cars_annos.mat").is_file():
                self._read_annos(folder, split)
                return
        raise CncnnError(
            f"cars: neither devkit/ nor cars_annos.mat found in {root} or {root / FOLDER} - expected "
            f"torchvision's layout {DEVKIT_LAYOUT} or {ANNOS_LAYOUT}"
        )

    def _read_devkit(self, folder: Path, split: str) -> None:
        if folder.name != FOLDER:
            raise CncnnError(
                f"cars: {folder} has torchvision's StanfordCars layout, whose reader needs the folder "
                f"to be named '{FOLDER}'; rename it or point --data-root at its parent"
            )
        require(folder / "devkit" / "cars_meta.mat", self.name, DEVKIT_LAYOUT)
        if split == "train":
            require(folder / "devkit" / "cars_train_annos.mat", self.name, DEVKIT_LAYOUT)
            require(folder / "cars_train", self.name, DEVKIT_LAYOUT)
        else:
            require(folder / "cars_test_annos_withlabels.mat", self.name, DEVKIT_LAYOUT)
            require(folder / "cars_test", self.name, DEVKIT_LAYOUT)
        try:
            reader = StanfordCars(str(folder.parent), split=split, download=False)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise CncnnError(f"cars: cannot read the .mat annotations in {folder}: {exc!r}") from None
        self.classes = [str(name) for name in reader.classes]
        self.samples = [(str(path), int(label)) for path, label in reader._samples]

    def _read_annos(self, folder: Path, split: str) -> None:
        annos_file = folder / "cars_annos.mat"
        require(folder / "car_ims", self.name, ANNOS_LAYOUT)
        try:
            mat = scipy.io.loadmat(str(annos_file), squeeze_me=True)
            annotations = np.atleast_1d(mat["annotations"])
            self.classes = [str(name) for name in np.atleast_1d(mat["class_names"]).tolist()]
            wanted = 1 if split == "test" else 0
            self.samples = [
                (str(folder / str(record["relative_im_path"])), int(record["class"]) - 1)
                for record in annotations
                if int(record["test"]) == wanted
            ]
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise CncnnError(
                f"cars: cannot read {annos_file} (expected 'annotations' with relative_im_path, "
                f"class, test and 'class_names'): {exc!r}"
            ) from None
