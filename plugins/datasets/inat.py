"""iNaturalist 2021 in its published layout: ``train_mini/``, ``train/``, ``val/`` and their JSON annotations."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, require
from cncnn_cli.data.download import Archive
from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .listing import Samples, require_images

FOLDER = "inat2021"
LAYOUT = "inat2021/{train_mini.json, val.json, train_mini/<category>/*.jpg, val/<category>/*.jpg} (train.json, train/)"
#: cncnn's split -> the published annotation file; ``train`` is ``train_split``'s. The 2021 test
#: set's labels are not public, so the published val is the test split, as papers report it.
FILES = {"train_mini": "train_mini", "train_full": "train", "val": "val", "test": "val"}
PUBLISHED_IMAGES = {"train_mini": 500_000, "train_full": 2_686_843, "val": 100_000, "test": 100_000}
#: Taxonomy levels each category carries, coarse to fine.
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
HOST = "https://ml-inat-competition-datasets.s3.amazonaws.com/2021/"


def read_annotations(path: Path) -> tuple[list[dict], list[str], list[int]]:
    """Categories, image file names and category ids of one published JSON file.

    The dictionaries of the images and annotations are dropped as soon as they are read:
    for the full train.json that is 2.7 M of each.
    """
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
        categories = document["categories"]
        file_of = {image["id"]: image["file_name"] for image in document.pop("images")}
        pairs = [(annotation["image_id"], annotation["category_id"]) for annotation in document.pop("annotations")]
    except (OSError, ValueError) as exc:
        raise CncnnError(f"inat: cannot read {path}: {exc} - replace it with the published file") from None
    except (KeyError, TypeError) as exc:
        raise CncnnError(f"inat: {path} lacks {exc} - expected the published JSON (images, annotations, "
                         f"categories with file_name, image_id, category_id)") from None
    unknown = next((image for image, _ in pairs if image not in file_of), None)
    if unknown is not None:
        raise CncnnError(f"inat: {path}: an annotation names image id {unknown}, which its images do not list")
    return categories, [file_of[image] for image, _ in pairs], [category for _, category in pairs]


@DATASETS.register_module(name="inat21")
class INaturalist2021(FineGrainedDataset):
    """iNaturalist 2021: 10,000 species, 2.7 M train (500 k in train_mini) / 100,000 val images.

    ``data_root`` is the folder holding the extracted archives (``train_mini/``, ``val/``,
    ``train_mini.json``, ``val.json``; ``inat2021/`` below it is found too). ``train_split``
    picks ``train_mini`` (default: 50 images a species) or ``train_full`` (``train.json``); ``val``
    (also ``test``, as the 2021 test labels are not public) is the published val split. Labels
    are the category ids, 0-9,999; ``classes`` are the species names and :attr:`taxonomy`
    keeps kingdom to genus. The file list is read from the JSON (no folder walk) into compact
    arrays, and images are decoded one at a time as they are used.
    """

    name = "inat21"
    check_splits = ("train", "val")
    published: ClassVar[dict[str, int]] = {
        **PUBLISHED_IMAGES, "train": PUBLISHED_IMAGES["train_mini"], "classes": 10_000}
    #: "Images have a max dimension of 500px" (visipedia/inat_comp, 2021/README.md).
    typical_image_size: ClassVar[tuple[int, int]] = (500, 375)
    #: The AWS Open Data files of the mini protocol with the md5 sums the dataset's README publishes
    #: (visipedia/inat_comp, 2021/README.md); torchvision's inaturalist.py has the same for the images.
    archives: ClassVar[tuple[Archive, ...]] = tuple(
        Archive(name, f"{HOST}{name}", None, None, md5=md5, into=FOLDER) for name, md5 in (
            ("train_mini.json.tar.gz", "395a35be3651d86dc3b0d365b8ea5f92"),
            ("val.json.tar.gz", "4d761e0f6a86cc63e8f7afc91f6a8f0b"),
            ("val.tar.gz", "f6f6e0e242e3d4c9569ba56400938afc"),
            ("train_mini.tar.gz", "db6ed8330e634445efc8fec83ae81442"),
        )
    )

    def __init__(
        self, data_root: str, split: str = "train", transform: Callable | None = None, train_split: str = "train_mini"
    ) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", *FILES))
        check_split(self.name, train_split, ("train_mini", "train_full"))
        published = FILES[train_split if split == "train" else split]
        root = dataset_dir(data_root, FOLDER, ("val.json", "train_mini.json", "train.json"))
        annotation_file = require(root / f"{published}.json", self.name, LAYOUT)
        categories, files, category_ids = read_annotations(annotation_file)
        try:
            ordered = sorted(categories, key=lambda category: category["id"])
            self.classes = [str(category["name"]) for category in ordered]
            self.taxonomy = [{rank: str(category.get(rank, "")) for rank in RANKS} for category in ordered]
            index_of = {category["id"]: index for index, category in enumerate(ordered)}
        except (KeyError, TypeError) as exc:
            raise CncnnError(f"inat: {annotation_file}: a category lacks {exc}; expected id and name") from None
        outside = next((category for category in category_ids if category not in index_of), None)
        if outside is not None:
            raise CncnnError(f"inat: {annotation_file}: an annotation has category_id {outside!r}, which is not one "
                             f"of its {len(ordered)} categories; replace it with the published file")
        self.samples = Samples(root, files, [index_of[category] for category in category_ids])
        require_images(self.name, (os.path.join(root, name) for name in files), annotation_file)
        self.annotation_file = annotation_file
        self.image_dirs = [root / published]

    @classmethod
    def published_counts(cls, train_split: str = "train_mini", **options: Any) -> dict[str, int]:
        """Published counts for these options: cncnn's ``train`` is ``train_split``."""
        return {**PUBLISHED_IMAGES, "train": PUBLISHED_IMAGES.get(train_split, 0), "classes": 10_000}
