"""Oxford-IIIT Pets, read by torchvision's ``OxfordIIITPet`` from the published ``images/`` and ``annotations/``."""
from __future__ import annotations

from typing import Callable, ClassVar

from torchvision.datasets import OxfordIIITPet

from cncnn_cli.data.dataset import FineGrainedDataset, check_split, dataset_dir, require
from cncnn_cli.data.download import Archive
from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from .listing import require_images

#: torchvision's folder name for the set (``OxfordIIITPet(root)`` reads ``root/oxford-iiit-pet``).
FOLDER = "oxford-iiit-pet"
LAYOUT = "oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/{trainval.txt, test.txt}}"
HOST = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"


@DATASETS.register_module(name="pets")
class Pets(FineGrainedDataset):
    """Oxford-IIIT Pets: 37 cat and dog breeds, 3,680 trainval / 3,669 test images.

    ``data_root`` is ``oxford-iiit-pet/`` or its parent. The published protocol trains on
    ``trainval`` and tests on ``test``; cncnn's ``train`` split is ``trainval`` (also accepted
    by that name). Class names are torchvision's (``"American Bulldog"``), ordered by the
    1-based class ids of the annotation files.
    """

    name = "pets"
    published: ClassVar[dict[str, int]] = {"train": 3680, "trainval": 3680, "test": 3669, "classes": 37}
    #: The Oxford VGG archives: md5 from torchvision's ``OxfordIIITPet._RESOURCES``, size and sha256
    #: from TFDS (tensorflow/datasets, tensorflow_datasets/url_checksums/oxford_iiit_pet.txt).
    archives: ClassVar[tuple[Archive, ...]] = (
        Archive("images.tar.gz", f"{HOST}images.tar.gz", 791_918_971,
                "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d",
                md5="5c4f3ee8e5d25df40f4fd59a7f44e54c", into=FOLDER),
        Archive("annotations.tar.gz", f"{HOST}annotations.tar.gz", 19_173_078,
                "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91",
                md5="95a8c909bbe2e81eed6a22bccdf3f68f", into=FOLDER),
    )

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        check_split(self.name, split, ("train", "trainval", "test"))
        folder = dataset_dir(data_root, FOLDER, ("annotations",))
        require(folder / "images", self.name, LAYOUT)
        lists = {name: require(folder / "annotations" / f"{name}.txt", self.name, LAYOUT)
                 for name in ("trainval", "test")}
        if folder.name != FOLDER:
            raise CncnnError(f"pets: torchvision's OxfordIIITPet reader needs the folder {folder} to be named "
                             f"'{FOLDER}'; rename it or point --data-root at its parent")
        readers = {name: self._reader(folder, name, path) for name, path in lists.items()}
        self.classes = list(readers["trainval"].classes)
        for name, reader in readers.items():
            label = next((label for label in reader._labels if not 0 <= label < len(self.classes)), None)
            if label is not None:
                raise CncnnError(f"pets: {lists[name]}: class id {label + 1} is outside 1-{len(self.classes)}, the "
                                 f"breeds trainval.txt names; the annotation files are from different copies")
        reader = readers["test" if split == "test" else "trainval"]
        self.samples = [(str(path), label) for path, label in zip(reader._images, reader._labels)]
        self.annotation_file = lists["test" if split == "test" else "trainval"]
        require_images(self.name, (path for path, _ in self.samples), self.annotation_file)
        self.image_dirs = [folder / "images"]
        self._listed = {str(path) for reader in readers.values() for path in reader._images}

    def _reader(self, folder, split: str, path) -> OxfordIIITPet:
        try:
            return OxfordIIITPet(str(folder.parent), split=split, download=False)
        except (ValueError, IndexError) as exc:
            raise CncnnError(f"pets: {path}: every line must be '<image> <class id> <species> <breed id>' "
                             f"({type(exc).__name__}: {exc})") from None

    def listed_files(self) -> set[str]:
        """Every image trainval.txt or test.txt names: ``images/`` holds both."""
        return self._listed
