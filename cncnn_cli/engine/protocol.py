"""Which images train, which choose the best checkpoint, and which test it.

The paper's protocol (the recipes' default) chooses the best epoch on the test split, as
the authors' release and most FGVC code do; that inflates the reported number. With
``val_fraction`` a class-stratified part of the training split, drawn from the seed,
chooses instead; with ``val_split`` a dataset's published validation split does
(FGVC-Aircraft: train on ``train``, choose on ``val``). The test split is then evaluated
once, at the end, on the chosen checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from mmengine.config import Config
from torch.utils.data import Dataset, Subset

from cncnn_cli.errors import CncnnError
from cncnn_cli.data.images import set_max_pixels
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.data.dataset import build_dataset, dataset_class
from cncnn_cli.data.gpu_decode import JpegBytes


@dataclass
class Datasets:
    train: Dataset
    #: The images the best checkpoint is chosen on: ``test`` itself under the paper's protocol.
    selection: Dataset
    test: Dataset
    classes: list[str]
    selected_on: Literal["test", "val"]


def stratified_holdout(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): ``round(fraction × n)`` of each class's n images held out.

    Every class keeps at least one training image; the draw depends only on the labels, the
    fraction and the seed, so the same seed holds out the same images on every machine.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    generator = torch.Generator().manual_seed(seed)
    held: list[int] = []
    for label in sorted(by_class):
        indices = by_class[label]
        count = min(int(fraction * len(indices) + 0.5), len(indices) - 1)
        order = torch.randperm(len(indices), generator=generator).tolist()
        held += [indices[i] for i in order[:count]]
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def build_datasets(cfg: Config, images_per_step: int) -> Datasets:
    """Train, selection and test sets with the recipe's preprocessing; layout problems surface here.

    With ``gpu_decode`` each set yields its plain JPEGs undecoded (:class:`JpegBytes`).

    ``images_per_step`` is the effective batch: a training set smaller than that makes no step.
    """
    options = dict(cfg.dataset)
    kind, root = options.pop("type"), options.pop("data_root", None)
    set_max_pixels(cfg.max_pixels)  # before the loader workers fork: they inherit it
    if cfg.val_split:
        options.update(_published_val_options(kind))

    def build(split: str, train: bool) -> Dataset:
        dataset = build_dataset(kind, root, split, build_transform(cfg.preprocess, train), **options)
        return JpegBytes(dataset, cfg.preprocess, train) if cfg.get("gpu_decode") else dataset

    train = build("train", True)
    test = build("test", False)
    _same_classes(kind, train, test, "test")
    selection, selected_on = test, "test"
    if cfg.val_split:
        selection, selected_on = build(cfg.val_split, False), "val"
        _same_classes(kind, train, selection, cfg.val_split)
    elif cfg.val_fraction:
        labels = _labels(kind, train)
        keep, held = stratified_holdout(labels, cfg.val_fraction, cfg.seed)
        if not held:
            raise CncnnError(f"--val-fraction {cfg.val_fraction} holds out no image of {kind}'s "
                             f"{len(labels)} training images; raise it")
        selection = Subset(build("train", False), held)
        train, selected_on = Subset(train, keep), "val"
    if len(train) < images_per_step:
        raise CncnnError(f"dataset {kind}: {len(train)} training images, fewer than one optimizer step of "
                         f"{images_per_step} (--batch-size × processes × --accumulate)")
    return Datasets(train, selection, test, list(test.classes), selected_on)


def _published_val_options(kind: str) -> dict:
    options = getattr(dataset_class(kind), "published_val", None)
    if options is None:
        raise CncnnError(f"dataset {kind} has no published validation split; hold out part of the training "
                         f"set with --val-fraction instead (e.g. --val-fraction 0.1)")
    return options


def _same_classes(kind: str, train: Dataset, other: Dataset, split: str) -> None:
    if list(train.classes) != list(other.classes):
        raise CncnnError(f"dataset {kind}: the train split has {len(train.classes)} classes and the {split} "
                         f"split {len(other.classes)}; they must be the same classes in the same order")


def _labels(kind: str, dataset: Dataset) -> list[int]:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise CncnnError(f"dataset {kind} does not list its samples as (path, label) pairs, which "
                         f"--val-fraction needs to stratify by class")
    return [int(label) for _, label in samples]
