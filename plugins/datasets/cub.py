"""CUB-200-2011 (Caltech-UCSD Birds) in its published layout."""
from __future__ import annotations

from typing import Callable, ClassVar

from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, read_pairs, require
from cncnn_cli.data.download import Archive

FOLDER = "CUB_200_2011"
LAYOUT = (
    "CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
    "images/NNN.Name/*.jpg}"
)


def class_name(folder: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    prefix, dot, rest = folder.partition(".")
    return (rest if dot and prefix.isdigit() else folder).replace("_", " ")


@DATASETS.register_module(name="cub")
class CUB(FineGrainedDataset):
    """CUB-200-2011 birds: 200 species, 5,994 train / 5,794 test images.

    ``data_root`` is ``CUB_200_2011/`` or its parent. Class names drop the ``NNN.`` prefix
    and turn underscores into spaces (``"Black footed Albatross"``).
    """

    name = "cub"
    published: ClassVar[dict[str, int]] = {"train": 5994, "test": 5794, "classes": 200}
    typical_image_size: ClassVar[tuple[int, int]] = (500, 375)  # most are 500 wide
    #: CaltechDATA record 65de6-vp158, which also publishes md5 97eceeb196236b17998738112f37df78.
    archives: ClassVar[tuple[Archive, ...]] = (Archive(
        "CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        1_150_585_339, "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"),)

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", "test"))
        root = dataset_dir(data_root, FOLDER, ("images.txt", "classes.txt"))
        files = {
            key: require(root / f"{key}.txt", self.name, LAYOUT)
            for key in ("images", "image_class_labels", "train_test_split", "classes")
        }
        images_dir = require(root / "images", self.name, LAYOUT)
        classes = read_pairs(files["classes"])
        self.classes = [class_name(classes[key]) for key in sorted(classes)]
        paths = read_pairs(files["images"])
        labels = read_pairs(files["image_class_labels"])
        is_train = read_pairs(files["train_test_split"])
        unlabeled = [image_id for image_id in paths if image_id not in labels or image_id not in is_train]
        if unlabeled:
            raise CncnnError(
                f"cub: image id {unlabeled[0]} of {files['images']} has no line in "
                f"image_class_labels.txt or train_test_split.txt"
            )
        wanted = "1" if split == "train" else "0"
        self.samples = [
            (str(images_dir / paths[image_id]), int(labels[image_id]) - 1)
            for image_id in sorted(paths)
            if is_train.get(image_id) == wanted
        ]
        self.annotation_file = files["images"]
        self.image_dirs = [images_dir]
        self._listed = {str(images_dir / path) for path in paths.values()}

    def listed_files(self) -> set[str]:
        """Every image of ``images.txt``: ``images/`` holds both splits."""
        return self._listed
