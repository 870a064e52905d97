"""``cncnn data check``: decode every image of a dataset and report what a training run would meet.

Counts per split and class, image sizes and modes (CUB has grayscale JPEGs, user data
has CMYK, palette and 16-bit files), every unreadable or missing file by path, before a
long run discovers them one by one. Copies of the public datasets come from mirrors, so
the report also compares the counts with the published ones and lists image files that no
annotation mentions: a copy with a missing or extra file gives results not comparable
with the papers'.
"""
from __future__ import annotations

import inspect
import os
import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from cncnn_cli.errors import CncnnError
from cncnn_cli.data.images import ImageReadError, find_images
from cncnn_cli.data.dataset import FineGrainedDataset, build_dataset, dataset_class
from cncnn_cli.utils.progress import progress


@dataclass
class SplitReport:
    """What one split holds. Sizes are ``{"min", "median", "max"}`` in pixels of the stored file."""

    split: str
    num_images: int
    per_class: dict[str, int]
    width: dict[str, int]
    height: dict[str, int]
    modes: dict[str, int]
    unreadable: list[dict[str, str]] = field(default_factory=list)
    #: Samples whose file does not exist: ``{"path", "listed_in"}`` (the annotation file).
    missing: list[dict[str, str]] = field(default_factory=list)


@dataclass
class DataReport:
    """The result of a check; ``problems`` empty means exit code 0.

    ``unlisted`` (image files no annotation mentions) and ``differences`` (from the published
    counts) are notes: a tiny or custom copy differs by design, so they leave the exit code alone.
    """

    dataset: str
    data_root: str
    classes: list[str]
    splits: list[SplitReport]
    problems: list[str]
    unlisted: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "data_root": self.data_root,
            "num_classes": len(self.classes),
            "splits": {report.split: asdict(report) for report in self.splits},
            "problems": self.problems,
            "unlisted_files": self.unlisted,
            "differences_from_published": self.differences,
            "ok": self.ok,
        }


def check_dataset(
    name: str,
    data_root: str | None = None,
    split: str | None = None,
    options: dict[str, Any] | None = None,
    show_progress: bool = False,
    workers: int | None = None,
) -> DataReport:
    """Decode every image of ``split`` (default: the splits covering the dataset) and report.

    ``show_progress`` draws a progress bar per split on stderr. Raises :class:`CncnnError`
    (exit 2) when the layout itself is unusable.
    """
    options = dict(options or {})
    cls = dataset_class(name)
    if not (isinstance(cls, type) and issubclass(cls, FineGrainedDataset)):
        raise CncnnError(f"dataset '{name}' does not derive from FineGrainedDataset; data check cannot inspect it")
    if data_root is None:
        if inspect.signature(cls).parameters["data_root"].default is inspect.Parameter.empty:
            raise CncnnError(f"dataset '{name}' needs --data-root DIR")
        data_root = ""
    splits = [split] if split else cls.splits_to_check(data_root, **options)
    datasets = {split_name: build_dataset(name, data_root, split_name, None, **options) for split_name in splits}
    workers = workers or min(8, os.cpu_count() or 1)
    reports = [_check_split(split_name, dataset, show_progress, workers) for split_name, dataset in datasets.items()]
    classes = next(iter(datasets.values())).classes
    differences = _differences(reports, len(classes), cls.published_counts(**options))
    unlisted = _unlisted(list(datasets.values()))
    return DataReport(name, str(data_root), classes, reports, _problems(reports), unlisted, differences)


def _inspect(dataset: FineGrainedDataset, index: int) -> tuple[str, tuple[int, int]] | str:
    try:
        return dataset.inspect(index)
    except ImageReadError as exc:
        return str(exc)


def _missing(dataset: FineGrainedDataset) -> list[dict[str, str]]:
    """Samples an annotation file lists whose image file does not exist (none for generated data)."""
    if dataset.annotation_file is None:
        return []
    listed_in = str(dataset.annotation_file)
    return [{"path": path, "listed_in": listed_in} for path, _ in dataset.samples if not os.path.isfile(path)]


def _check_split(split: str, dataset: FineGrainedDataset, show_progress: bool, workers: int) -> SplitReport:
    missing = _missing(dataset)
    absent = {item["path"] for item in missing}
    present = [i for i, (path, _) in enumerate(dataset.samples) if path not in absent]
    modes: Counter[str] = Counter()
    widths, heights, unreadable = [], [], []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress(f"checking {split}", total=len(present), unit="images", enabled=show_progress) as bar:
        for index, result in zip(present, pool.map(lambda i: _inspect(dataset, i), present)):
            path = dataset.samples[index][0]
            if isinstance(result, str):
                unreadable.append({"path": path, "error": result})
            else:
                mode, (width, height) = result
                modes[mode] += 1
                widths.append(width)
                heights.append(height)
            bar.advance()
    counts = Counter(label for _, label in dataset.samples)
    return SplitReport(
        split=split,
        num_images=len(dataset),
        per_class={name: counts.get(i, 0) for i, name in enumerate(dataset.classes)},
        width=_stats(widths),
        height=_stats(heights),
        modes=dict(modes.most_common()),
        unreadable=unreadable,
        missing=missing,
    )


def _stats(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    return {"min": min(values), "median": int(statistics.median_low(values)), "max": max(values)}


def _problems(reports: list[SplitReport]) -> list[str]:
    problems = []
    for report in reports:
        if report.num_images == 0:
            problems.append(f"split '{report.split}' has no images")
        elif report.split == "train":
            problems += [
                f"split 'train': class '{name}' has no images"
                for name, count in report.per_class.items()
                if count == 0
            ]
        problems += [
            f"{item['path']}: listed in {Path(item['listed_in']).name}, file missing" for item in report.missing
        ]
        problems += [f"unreadable image {item['error']}" for item in report.unreadable]
    return problems


def _differences(reports: list[SplitReport], num_classes: int, published: dict[str, int]) -> list[str]:
    """Where the checked splits and classes differ from the published dataset, one line each."""
    found = [(f"split '{split.split}'", "images", split.num_images, published.get(split.split)) for split in reports]
    found.append(("classes", "classes", num_classes, published.get("classes")))
    return [
        f"{what}: {count:,} {unit}, published {expected:,} ({abs(count - expected):,} "
        f"{'fewer' if count < expected else 'more'})"
        for what, unit, count, expected in found
        if expected is not None and count != expected
    ]


def _unlisted(datasets: list[FineGrainedDataset]) -> list[str]:
    """Image files in the datasets' image folders that no annotation of any split mentions."""
    folders = {os.path.normpath(folder) for dataset in datasets for folder in dataset.image_dirs}
    listed = {os.path.normpath(path) for dataset in datasets for path in dataset.listed_files()}
    on_disk = {os.path.normpath(path) for folder in folders if os.path.isdir(folder)
               for path in find_images(folder, named=False)}
    return sorted(on_disk - listed)
