"""The user's own data: ``ROOT/<split>/<class>/<image>``."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any, Callable

from cncnn_cli.errors import CncnnError
from cncnn_cli.data.images import find_images, list_folder
from cncnn_cli.registry import DATASETS

from cncnn_cli.data.dataset import FineGrainedDataset, require

LAYOUT = "ROOT/{train,test}/<class>/<image>"
TRAIN = "train"


def class_dirs(split_dir: Path) -> list[Path]:
    """Visible sub-folders of a split folder, sorted by name (odd entries skipped with a warning each)."""
    return [path for path, info in list_folder(split_dir, suffixes=())
            if stat.S_ISDIR(info.st_mode) and not path.name.startswith(".")]


@DATASETS.register_module(name="imagefolder")
class ImageFolder(FineGrainedDataset):
    """Your own images in ROOT/<split>/<class>/<image>; classes come from ROOT/train.

    Class names are the folder names under ``ROOT/train``, sorted; every other split
    (``test``, ``val`` or any sub-folder name) uses the same indices, and a class folder
    unknown to ``train`` is an error.
    """

    name = "imagefolder"

    def __init__(self, data_root: str, split: str = "train", transform: Callable | None = None) -> None:
        super().__init__(transform)
        root = Path(data_root).expanduser()
        train_dir = require(root / TRAIN, self.name, LAYOUT)
        split_dir = require(root / split, self.name, LAYOUT)
        self.classes = [p.name for p in class_dirs(train_dir)]
        if not self.classes:
            raise CncnnError(f"imagefolder: {train_dir} has no class folders - expected layout {LAYOUT}")
        index = {name: i for i, name in enumerate(self.classes)}
        for folder in class_dirs(split_dir):
            if folder.name not in index:
                raise CncnnError(
                    f"imagefolder: class folder {folder} has no counterpart in {train_dir}; "
                    f"class names come from the train split"
                )
            self.samples += [(str(path), index[folder.name]) for path in find_images(folder, named=False)]

    @classmethod
    def splits_to_check(cls, data_root: str, **options: Any) -> list[str]:
        """``train`` first, then every other sub-folder of ``ROOT``."""
        root = Path(data_root).expanduser()
        others = [p.name for p in class_dirs(root) if p.name != TRAIN] if root.is_dir() else []
        return [TRAIN, *others]
