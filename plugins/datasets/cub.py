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
        for key, table in (("image_class_labels", labels), ("train_test_split", is_train)):
            unknown = sorted(set(table) - set(paths))
            if unknown:
                raise CncnnError(f"cub: {files[key]} names image id {unknown[0]}, which {files['images'].name} "
                                 f"does not list; the annotation files are from different copies")
        index_of = {class_id: index for index, class_id in enumerate(sorted(classes))}
        label_of = {}
        for image_id in sorted(paths):
            label = labels[image_id]
            if not label.isdigit() or int(label) not in index_of:
                raise CncnnError(f"cub: {files['image_class_labels']}: image {image_id} has class {label!r}, which "
                                 f"is not a class id of {files['classes'].name} ({min(classes)}-{max(classes)})")
            if is_train[image_id] not in ("0", "1"):
                raise CncnnError(f"cub: {files['train_test_split']}: image {image_id} has {is_train[image_id]!r}; "
                                 f"expected 1 (train) or 0 (test)")
            label_of[image_id] = index_of[int(label)]
        wanted = "1" if split == "train" else "0"
        self.samples = [(str(images_dir / paths[image_id]), label_of[image_id])
                        for image_id in sorted(paths) if is_train[image_id] == wanted]
        self.annotation_file = files["images"]
        self.image_dirs = [images_dir]
        self._listed = {str(images_dir / path) for path in paths.values()}

    def listed_files(self) -> set[str]:
        """Every image of ``images.txt``: ``images/`` holds both splits."""
        return self._listed
