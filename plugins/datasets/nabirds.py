"""NABirds (Cornell Lab of Ornithology) in its published layout, with its class hierarchy."""
from __future__ import annotations

from typing import Callable, ClassVar

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, require
from cncnn_cli.data.download import Archive
from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .listing import read_table, require_images

FOLDER = "nabirds"
LAYOUT = ("nabirds/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, hierarchy.txt, "
          "images/NNNN/*.jpg}")


@DATASETS.register_module(name="nabirds")
class NABirds(FineGrainedDataset):
    """NABirds: 555 leaf classes of North American birds, 23,929 train / 24,633 test images.

    ``data_root`` is ``nabirds/`` or its parent. ``classes.txt`` numbers 1,011 classes: the
    555 that images are labelled with are the leaves, the rest are the groups above them in
    ``hierarchy.txt`` (``Mallard (Male)`` < ``Mallard`` < ``Ducks`` < ... < ``Birds``). Their ids
    are not contiguous, so the labels are the leaf ids in increasing order, mapped to 0..554;
    ``classes`` keeps the names and :meth:`ancestors` the hierarchy. ``bounding_boxes.txt``,
    ``parts/`` and the photographer files are not needed for classification.
    """

    name = "nabirds"
    published: ClassVar[dict[str, int]] = {"train": 23929, "test": 24633, "classes": 555}
    #: No public URL and no published checksum: the archive comes with accepting Cornell's terms.
    archives: ClassVar[tuple[Archive, ...]] = (Archive("nabirds.tar.gz", None, None, None),)
    download_note: ClassVar[str] = (
        "NABirds is downloaded after accepting the Cornell Lab of Ornithology's terms of use at "
        "https://dl.allaboutbirds.org/nabirds (a form that mails a link); then extract it with "
        "`cncnn data download nabirds --from nabirds.tar.gz` (no checksum is published, so none is checked; "
        "`cncnn data check --dataset nabirds` compares the copy with the published counts)."
    )

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", "test"))
        root = dataset_dir(data_root, FOLDER, ("images.txt", "hierarchy.txt"))
        files = {key: require(root / f"{key}.txt", self.name, LAYOUT)
                 for key in ("images", "image_class_labels", "train_test_split", "classes", "hierarchy")}
        images_dir = require(root / "images", self.name, LAYOUT)
        tables = {key: read_table(path, self.name) for key, path in files.items()}
        paths, labels, is_train = tables["images"], tables["image_class_labels"], tables["train_test_split"]
        names, parents = tables["classes"], tables["hierarchy"]
        for key in ("image_class_labels", "train_test_split"):
            unlisted = next((image for image in paths if image not in tables[key]), None)
            if unlisted is not None:
                raise CncnnError(f"nabirds: image {unlisted} of {files['images']} has no line in {files[key]}")
        unknown = next((label for label in labels.values() if label not in names), None)
        if unknown is not None:
            image = next(image for image, label in labels.items() if label == unknown)
            raise CncnnError(f"nabirds: {files['image_class_labels']}: image {image} has class {unknown!r}, which "
                             f"{files['classes'].name} does not number; the annotation files are from different copies")
        bad_flag = next((image for image in paths if is_train[image] not in ("0", "1")), None)
        if bad_flag is not None:
            raise CncnnError(f"nabirds: {files['train_test_split']}: image {bad_flag} has {is_train[bad_flag]!r}; "
                             f"expected 1 (train) or 0 (test)")
        leaves = sorted({labels[image] for image in paths}, key=_id_order)
        index_of = {class_id: index for index, class_id in enumerate(leaves)}
        self.classes = [names[class_id] for class_id in leaves]
        self.class_ids = leaves
        self._names, self._parents = names, parents
        wanted = "1" if split == "train" else "0"
        self.samples = [(str(images_dir / paths[image]), index_of[labels[image]])
                        for image in paths if is_train[image] == wanted]
        self._listed = {str(images_dir / path) for path in paths.values()}
        require_images(self.name, (path for path, _ in self.samples), files["images"])
        self.annotation_file = files["images"]
        self.image_dirs = [images_dir]

    def ancestors(self, label: int) -> list[str]:
        """Class ``label``'s name and the names of the groups above it, leaf first, up to the root."""
        chain, class_id, seen = [], self.class_ids[label], set()
        while class_id is not None and class_id not in seen:
            seen.add(class_id)
            chain.append(self._names.get(class_id, class_id))
            class_id = self._parents.get(class_id)
        return chain

    def listed_files(self) -> set[str]:
        """Every image of ``images.txt``: ``images/`` holds both splits."""
        return self._listed


def _id_order(class_id: str) -> tuple[int, str]:
    """Numeric ids in numeric order (``2`` before ``10``); anything else after them, by text."""
    return (int(class_id), "") if class_id.isdigit() else (1 << 62, class_id)

