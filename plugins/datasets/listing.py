"""What the benchmark readers share: compact sample lists, tables of ``<key> <value>`` lines, absent files.

The sets read here range from 7 k (Pets) to 2.7 M images (iNaturalist 2021). A list of
``(path, label)`` tuples costs about 150 bytes a sample in Python objects, and every loader
worker that reads it touches their reference counts, which copies the pages the fork shared
(pytorch/pytorch#13246). :class:`Samples` keeps the same samples as two numpy arrays (UTF-8
paths relative to one folder, int32 labels) and builds a tuple only when one is asked for.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.textio import read_text_file


class Samples(Sequence):
    """``(folder/relative_path, label)`` pairs held as numpy arrays; a tuple is made per access."""

    def __init__(self, folder: str | Path, relative: Sequence[str], labels: Sequence[int]) -> None:
        self.folder = str(folder)
        self._paths = np.array([path.encode("utf-8") for path in relative], dtype=bytes)
        self._labels = np.asarray(labels, dtype=np.int32)
        if len(self._paths) != len(self._labels):
            raise ValueError("one label per path")

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> tuple[str, int]:  # type: ignore[override] - no slices needed
        return os.path.join(self.folder, self._paths[index].decode("utf-8")), int(self._labels[index])

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for index in range(len(self)):
            yield self[index]

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label, without building the tuples."""
        return self._labels


def read_table(path: Path, dataset: str) -> dict[str, str]:
    """``{key: value}`` of a file of ``<key> <value>`` lines (the value may hold spaces), in file order."""
    table: dict[str, str] = {}
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not value.strip():
            raise CncnnError(f"{dataset}: {path}:{number}: expected '<id> <value>', got {line.strip()!r}")
        table[key] = value.strip()
    return table


def absent(paths: Iterable[str]) -> list[str]:
    """The ``paths`` that are not files, in order, listing each folder once instead of a stat per path.

    2.7 M stats are minutes on a network file system; one ``scandir`` per class folder is the
    listing torchvision's ``INaturalist`` does anyway.
    """
    present: dict[str, set[str]] = {}
    missing = []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in present:
            try:
                with os.scandir(folder or ".") as entries:
                    present[folder] = {entry.name for entry in entries if entry.is_file()}
            except OSError:
                present[folder] = set()
        if name not in present[folder]:
            missing.append(path)
    return missing


def require_images(dataset: str, paths: Iterable[str], listed_in: Path) -> None:
    """One line naming the first image ``listed_in`` names that is not on disk, and how many are absent.

    An absent file means an incomplete copy (an extraction that stopped, a partial mirror):
    training on the rest would give numbers nobody can compare, so it is refused before any work.
    """
    missing = absent(paths)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CncnnError(f"{dataset}: {missing[0]}{more} listed in {listed_in} but not on disk - the copy is "
                         f"incomplete; extract the published archives again (`cncnn data download {dataset}`)")
