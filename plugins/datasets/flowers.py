"""Oxford Flowers-102 in its published layout: ``jpg/``, ``imagelabels.mat`` and ``setid.mat``."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import scipy.io
from torchvision.datasets import Flowers102

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, require
from cncnn_cli.data.download import Archive
from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .listing import require_images

#: torchvision's folder name for the set (``Flowers102(root)`` reads ``root/flowers-102``).
FOLDER = "flowers-102"
LAYOUT = "flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}"
#: setid.mat's key for each published split (torchvision's ``Flowers102._splits_map``).
SET_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}
SPLITS = ("train", "val", "trainval", "test")
PUBLISHED_IMAGES = {"train": 1020, "val": 1020, "trainval": 2040, "test": 6149}
HOST = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"


def read_mat(path, key: str) -> np.ndarray:
    """``key`` of a Flowers-102 ``.mat`` file as a 1-d array of numbers."""
    try:
        values = np.atleast_1d(scipy.io.loadmat(str(path), squeeze_me=True)[key])
    except KeyError:
        raise CncnnError(f"flowers: {path} has no {key!r} - is it the published {path.name}?") from None
    except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise CncnnError(f"flowers: cannot read {path}: {exc!r} - replace it with the published file") from None
    if not np.issubdtype(values.dtype, np.number):
        raise CncnnError(f"flowers: {key!r} in {path} holds {values.dtype}, not numbers - is it the published file?")
    return values


@DATASETS.register_module(name="flowers")
class Flowers(FineGrainedDataset):
    """Oxford Flowers-102: 102 species, 1,020 train / 1,020 val / 6,149 test images.

    The published "train" split is the small one: 10 images a class, fewer than the test
    split's 6,149. Papers train on train+val (2,040) and report test, so cncnn's ``train``
    split is ``train_split`` (``trainval`` by default); ``--split trainval`` names it, and
    ``train``, ``val`` and ``test`` keep the published meaning (``train_split='train'`` trains
    on the 1,020 alone, ``--val-split val`` then chooses on the published val).

    torchvision's ``Flowers102`` reads these files the same way (setid ``trnid``/``valid``/
    ``tstid``, 1-based labels, ``jpg/image_NNNNN.jpg``), but it refuses any ``.mat`` whose md5
    is not the published one with "Dataset not found or corrupted" and no file named. So they
    are read here, with its class names, and a problem names the file and the image.
    """

    name = "flowers"
    published: ClassVar[dict[str, int]] = {**PUBLISHED_IMAGES, "train": PUBLISHED_IMAGES["trainval"], "classes": 102}
    check_splits = ("train", "test")
    #: ``--val-split val``: train on the published train split only, so that val can choose.
    published_val: ClassVar[dict[str, str]] = {"train_split": "train"}
    #: The Oxford VGG files: md5 from torchvision's ``Flowers102._file_dict``, size and sha256 from
    #: TFDS (tensorflow/datasets, tensorflow_datasets/url_checksums/oxford_flowers102.txt).
    archives: ClassVar[tuple[Archive, ...]] = (
        Archive("102flowers.tgz", f"{HOST}102flowers.tgz", 344_862_509,
                "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246",
                md5="52808999861908f626f3c1f4e79d11fa", into=FOLDER),
        Archive("imagelabels.mat", f"{HOST}imagelabels.mat", 502,
                "4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d",
                md5="e0620be6f572b9609742df49c70aed4d", into=FOLDER),
        Archive("setid.mat", f"{HOST}setid.mat", 14_989,
                "46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd",
                md5="a5357ecc9cb78c4bef273ce3793fc85c", into=FOLDER),
    )

    def __init__(
        self, data_root: str, split: str = "train", transform: Callable | None = None, train_split: str = "trainval"
    ) -> None:
        super().__init__(transform)
        check_split(self.name, split, SPLITS)
        check_split(self.name, train_split, ("train", "trainval"))
        published_split = train_split if split == "train" else split
        root = dataset_dir(data_root, FOLDER, ("jpg", "setid.mat"))
        images_dir = require(root / "jpg", self.name, LAYOUT)
        labels_file = require(root / "imagelabels.mat", self.name, LAYOUT)
        setid_file = require(root / "setid.mat", self.name, LAYOUT)
        labels = read_mat(labels_file, "labels")
        names = list(Flowers102.classes)
        outside = np.flatnonzero((labels != labels.astype(np.int64)) | (labels < 1) | (labels > len(names)))
        if outside.size:
            raise CncnnError(f"flowers: {labels_file}: image {outside[0] + 1} has label {labels[outside[0]]:g}, "
                             f"outside 1-{len(names)}; replace it with the published imagelabels.mat")
        keys = [SET_KEYS[part] for part in (("train", "val") if published_split == "trainval" else (published_split,))]
        image_ids = np.concatenate([read_mat(setid_file, key) for key in keys]).astype(np.int64)
        beyond = image_ids[(image_ids < 1) | (image_ids > len(labels))]
        if beyond.size:
            raise CncnnError(f"flowers: {setid_file}: image id {beyond[0]} is outside 1-{len(labels)}, the images "
                             f"{labels_file.name} labels; the two files are from different copies")
        used = sorted(set(labels.astype(np.int64).tolist()))
        index_of = {label: index for index, label in enumerate(used)}
        self.classes = [names[label - 1] for label in used]
        self.samples = [(str(images_dir / f"image_{image_id:05d}.jpg"), index_of[int(labels[image_id - 1])])
                        for image_id in image_ids.tolist()]
        require_images(self.name, (path for path, _ in self.samples), setid_file)
        self.annotation_file = setid_file
        self.image_dirs = [images_dir]
        self._listed = {str(images_dir / f"image_{image_id:05d}.jpg") for image_id in range(1, len(labels) + 1)}

    @classmethod
    def published_counts(cls, train_split: str = "trainval", **options: Any) -> dict[str, int]:
        """Published counts for these options: cncnn's ``train`` is ``train_split``."""
        return {**PUBLISHED_IMAGES, "train": PUBLISHED_IMAGES.get(train_split, 0), "classes": 102}

    def listed_files(self) -> set[str]:
        """Every image ``imagelabels.mat`` labels: ``jpg/`` holds all three splits."""
        return self._listed
