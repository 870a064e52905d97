"""``cncnn data check``: decode every image of a dataset and report what a training run would meet.

Counts per split and class, image sizes and modes (CUB has grayscale JPEGs, user data
has CMYK, palette and 16-bit files), and every unreadable file by path, before a long
run discovers them one by one.
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

from rich.progress import Progress

import cncnn_plugins.datasets  # noqa: F401  (registers the built-in datasets)
from cncnn_cli.errors import CncnnError
from cncnn_cli.images import ImageReadError
from cncnn_plugins.datasets.base import FineGrainedDataset, build_dataset, dataset_class


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


@dataclass
class DataReport:
    """The result of a check; ``problems`` empty means exit code 0."""

    dataset: str
    data_root: str
    classes: list[str]
    splits: list[SplitReport]
    problems: list[str]

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
            "ok": self.ok,
        }


def dataset_from_recipe(recipe: str | Path) -> dict[str, Any]:
    """The ``dataset = dict(type=..., data_root=..., ...)`` entry of a recipe (a file or a bundled name)."""
    from cncnn_cli.recipes import load_recipe

    config = load_recipe(recipe)
    dataset = config.get("dataset")
    if not isinstance(dataset, dict) or "type" not in dataset:
        raise CncnnError(f"recipe {recipe} has no `dataset = dict(type=..., data_root=...)` entry")
    return dict(dataset)


def check_dataset(
    name: str,
    data_root: str | None = None,
    split: str | None = None,
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> DataReport:
    """Decode every image of ``split`` (default: the splits covering the dataset) and report.

    Raises :class:`CncnnError` (exit 2) when the layout itself is unusable.
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
    reports = [_check_split(split_name, dataset, progress, workers) for split_name, dataset in datasets.items()]
    classes = next(iter(datasets.values())).classes
    return DataReport(name, str(data_root), classes, reports, _problems(reports))


def _inspect(dataset: FineGrainedDataset, index: int) -> tuple[str, tuple[int, int]] | str:
    try:
        return dataset.inspect(index)
    except ImageReadError as exc:
        return str(exc)


def _check_split(split: str, dataset: FineGrainedDataset, progress: Progress | None, workers: int) -> SplitReport:
    task = progress.add_task(f"checking {split}", total=len(dataset)) if progress else None
    modes: Counter[str] = Counter()
    widths, heights, unreadable = [], [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (path, _), result in zip(dataset.samples, pool.map(lambda i: _inspect(dataset, i), range(len(dataset)))):
            if isinstance(result, str):
                unreadable.append({"path": path, "error": result})
            else:
                mode, (width, height) = result
                modes[mode] += 1
                widths.append(width)
                heights.append(height)
            if progress is not None:
                progress.advance(task)
    counts = Counter(label for _, label in dataset.samples)
    return SplitReport(
        split=split,
        num_images=len(dataset),
        per_class={name: counts.get(i, 0) for i, name in enumerate(dataset.classes)},
        width=_stats(widths),
        height=_stats(heights),
        modes=dict(modes.most_common()),
        unreadable=unreadable,
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
        problems += [f"unreadable image {item['error']}" for item in report.unreadable]
    return problems
