"""FGVC-Aircraft 2013b, read by torchvision's ``FGVCAircraft``, with its copyright banner cropped."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from torchvision.datasets import FGVCAircraft

from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS
from cncnn_cli.utils.textio import read_text_file

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, require
from cncnn_cli.data.download import Archive

FOLDER = "fgvc-aircraft-2013b"
LAYOUT = "fgvc-aircraft-2013b/data/{images/, variants.txt, images_variant_{train,val,trainval,test}.txt}"
LEVEL_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
FGVC_SPLITS = ("train", "val", "trainval", "test")
#: Classes at each annotation level and images per FGVC split of the published 2013b release.
PUBLISHED_CLASSES = {"variant": 100, "family": 70, "manufacturer": 30}
PUBLISHED_IMAGES = {"train": 3334, "val": 3333, "trainval": 6667, "test": 3333}
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
    published: ClassVar[dict[str, int]] = {
        **PUBLISHED_IMAGES, "train": PUBLISHED_IMAGES["trainval"], "classes": PUBLISHED_CLASSES["variant"]
    }
    #: About 1-2 Mpixel photos, banner included (it is cropped after decoding, as in training).
    typical_image_size: ClassVar[tuple[int, int]] = (1200, 800)
    #: ``--val-split val``: train on FGVC's ``train`` only, so its ``val`` can choose the checkpoint.
    published_val: ClassVar[dict[str, str]] = {"train_split": "train"}
    #: The Oxford VGG release.
    archives: ClassVar[tuple[Archive, ...]] = (Archive(
        "fgvc-aircraft-2013b.tar.gz",
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
        2_770_575_360, "d5f68b1b81d6d7831eb9d5c5517074176b5dfbce6bcb43dc14ed1c66a87b8d75"),)

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
        self.annotation_file = data / f"images_{annotation_level}_{fgvc_split}.txt"
        self.image_dirs = [data / "images"]
        self._level_files = [data / f"images_{annotation_level}_{name}.txt" for name in FGVC_SPLITS]

    @classmethod
    def published_counts(
        cls, annotation_level: str = "variant", train_split: str = "trainval", **options: Any
    ) -> dict[str, int]:
        """Published counts for these options: cncnn's ``train`` is FGVC's ``train_split``."""
        counts = {**PUBLISHED_IMAGES, "train": PUBLISHED_IMAGES.get(train_split, 0)}
        return {**counts, "classes": PUBLISHED_CLASSES.get(annotation_level, 0)}

    def listed_files(self) -> set[str]:
        """Every image any FGVC split names: ``data/images`` holds train, val and test."""
        names = set()
        for path in self._level_files:
            if path.is_file():
                lines = read_text_file(path).splitlines()
                names |= {line.split(" ", 1)[0] for line in lines if line.strip()}
        return {str(self.image_dirs[0] / f"{name}.jpg") for name in names}

    def kept_region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Everything above the copyright banner (with ``crop_banner``), on either decoding path."""
        if not self.crop_banner:
            return 0, 0, height, width
        return 0, 0, max(height - BANNER_HEIGHT, 1), width
