"""FGVC-Aircraft 2013b, read by torchvision's ``FGVCAircraft``, with its copyright banner cropped."""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.datasets import FGVCAircraft

from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .base import FineGrainedDataset, check_split, dataset_dir, require

FOLDER = "fgvc-aircraft-2013b"
LAYOUT = "fgvc-aircraft-2013b/data/{images/, variants.txt, images_variant_{train,val,trainval,test}.txt}"
LEVEL_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
FGVC_SPLITS = ("train", "val", "trainval", "test")
#: Height in pixels of the copyright banner at the bottom of every FGVC-Aircraft image.
BANNER_HEIGHT = 20


@DATASETS.register_module(name="aircraft")
class Aircraft(FineGrainedDataset):
    """FGVC-Aircraft: 100 variants, 6,667 trainval / 3,333 test images.

    ``data_root`` is ``fgvc-aircraft-2013b/`` or its parent. cncnn's ``train`` split is
    FGVC's ``train_split`` (``trainval`` by default, as in the paper); ``val``, ``trainval``
    and ``test`` keep their FGVC meaning. ``annotation_level`` picks ``variant`` (default),
    ``family`` or ``manufacturer`` labels. ``crop_banner`` removes the bottom 20-pixel
    copyright banner before the transform.
    """

    name = "aircraft"

    def __init__(
        self,
        data_root: str,
        split: str = "train",
        transform: Callable | None = None,
        annotation_level: str = "variant",
        train_split: str = "trainval",
        crop_banner: bool = True,
    ) -> None:
        super().__init__(transform)
        check_split(self.name, split, FGVC_SPLITS)
        check_split(self.name, train_split, ("train", "trainval"))
        if annotation_level not in LEVEL_FILES:
            raise CncnnError(f"aircraft: annotation_level must be one of {', '.join(LEVEL_FILES)}")
        self.crop_banner = crop_banner
        fgvc_split = train_split if split == "train" else split
        folder = dataset_dir(data_root, FOLDER, ("data",))
        data = folder / "data"
        require(data / "images", self.name, LAYOUT)
        require(data / LEVEL_FILES[annotation_level], self.name, LAYOUT)
        require(data / f"images_{annotation_level}_{fgvc_split}.txt", self.name, LAYOUT)
        if folder.name != FOLDER:
            raise CncnnError(
                f"aircraft: torchvision's FGVCAircraft reader needs the folder {folder} to be named "
                f"'{FOLDER}'; rename it or point --data-root at its parent"
            )
        try:
            reader = FGVCAircraft(
                str(folder.parent), split=fgvc_split, annotation_level=annotation_level, download=False
            )
        except (KeyError, ValueError) as exc:
            raise CncnnError(
                f"aircraft: {data}/images_{annotation_level}_{fgvc_split}.txt names a class missing "
                f"from {LEVEL_FILES[annotation_level]}, or a line is malformed: {exc!r}"
            ) from None
        self.classes = list(reader.classes)
        self.samples = list(zip(reader._image_files, reader._labels))

    def prepare(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        if not self.crop_banner:
            return image
        if isinstance(image, torch.Tensor):
            return image[..., : max(image.shape[-2] - BANNER_HEIGHT, 1), :]
        width, height = image.size
        return image.crop((0, 0, width, max(height - BANNER_HEIGHT, 1)))
