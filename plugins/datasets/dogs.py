"""Stanford Dogs in its published layout: ``Images/<wnid>-<breed>/``, ``train_list.mat`` and ``test_list.mat``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import scipy.io

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, require
from cncnn_cli.data.download import Archive
from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .listing import require_images

FOLDER = "stanford_dogs"
#: Where the split lists are: lists.tar unpacked into lists/, or beside Images/.
LIST_DIRS = ("lists", ".")
LAYOUT = "stanford_dogs/{Images/<wnid>-<breed>/*.jpg, lists/{train_list.mat, test_list.mat} (or beside Images/)}"
HOST = "http://vision.stanford.edu/aditya86/ImageNetDogs/"


def breed(folder: str) -> str:
    """``"n02085782-Japanese_spaniel"`` -> ``"Japanese spaniel"``."""
    wnid, dash, rest = folder.partition("-")
    return (rest if dash and wnid.startswith("n") else folder).replace("_", " ")


def read_list(path: Path) -> tuple[list[str], list[int]]:
    """``file_list`` (``<wnid>-<breed>/<image>.jpg``) and ``labels`` (1-based) of a split list."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True)
        files = [str(name) for name in np.atleast_1d(mat["file_list"])]
        labels = [float(label) for label in np.atleast_1d(mat["labels"])]
    except KeyError as exc:
        raise CncnnError(f"dogs: {path} has no {exc.args[0]!r} - expected the file_list and labels of Stanford "
                         f"Dogs' lists.tar; is it the right file?") from None
    except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise CncnnError(f"dogs: cannot read {path}: {exc!r} - replace it with the file of lists.tar") from None
    if len(files) != len(labels):
        raise CncnnError(f"dogs: {path} has {len(files)} files but {len(labels)} labels; replace it with the file "
                         f"of lists.tar")
    return files, labels


@DATASETS.register_module(name="dogs")
class StanfordDogs(FineGrainedDataset):
    """Stanford Dogs: 120 breeds (ImageNet synsets), 12,000 train / 8,580 test images.

    ``data_root`` is ``stanford_dogs/`` (any folder holding ``Images/``) or its parent. The
    breeds are the ``<wnid>-<breed>`` folders the two lists name, in wnid order, which is the
    order of the lists' 1-based ``labels``; a label that disagrees with its image's folder is
    an error. ``Annotation/`` (bounding boxes) is not needed for classification.
    """

    name = "dogs"
    published: ClassVar[dict[str, int]] = {"train": 12000, "test": 8580, "classes": 120}
    #: The Stanford host's files, with the sizes and sha256 TFDS recorded from them
    #: (tensorflow/datasets, tensorflow_datasets/url_checksums/stanford_dogs.txt).
    archives: ClassVar[tuple[Archive, ...]] = (
        Archive("images.tar", f"{HOST}images.tar", 793_579_520,
                "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58", into=FOLDER),
        Archive("annotation.tar", f"{HOST}annotation.tar", 21_852_160,
                "662ed36f707be6b195c2fda392d8e153e83af28cedc8e2134a649f198def30fd", into=FOLDER),
        Archive("lists.tar", f"{HOST}lists.tar", 481_280,
                "34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c", into=f"{FOLDER}/lists"),
    )

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", "test"))
        root = dataset_dir(data_root, FOLDER, ("Images",))
        images_dir = require(root / "Images", self.name, LAYOUT)
        lists = next((root / folder for folder in LIST_DIRS if (root / folder / "train_list.mat").is_file()),
                     root / "lists")
        files = {name: require(lists / f"{name}_list.mat", self.name, LAYOUT) for name in ("train", "test")}
        read = {name: read_list(path) for name, path in files.items()}
        folders = sorted({entry.split("/", 1)[0] for names, _ in read.values() for entry in names})
        for name, (entries, labels) in read.items():
            for entry, label in zip(entries, labels):
                if label != int(label) or not 1 <= label <= len(folders):
                    raise CncnnError(f"dogs: {files[name]}: {entry} has label {label:g}, outside 1-{len(folders)} "
                                     f"(the breeds the lists name); the list is from another copy")
                if entry.split("/", 1)[0] != folders[int(label) - 1]:
                    raise CncnnError(f"dogs: {files[name]}: {entry} has label {int(label)}, which is breed "
                                     f"{folders[int(label) - 1]}; the list is from another copy")
        self.classes = [breed(folder) for folder in folders]
        entries, labels = read[split]
        self.samples = [(str(images_dir / entry), int(label) - 1) for entry, label in zip(entries, labels)]
        require_images(self.name, (path for path, _ in self.samples), files[split])
        self.annotation_file = files[split]
        self.image_dirs = [images_dir]
        self._listed = {str(images_dir / entry) for names, _ in read.values() for entry in names}

    def listed_files(self) -> set[str]:
        """Every image either list names: ``Images/`` holds both splits."""
        return self._listed
