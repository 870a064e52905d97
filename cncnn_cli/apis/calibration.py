"""``cncnn calibrate``: fit a softmax temperature on validation data and store it in a new checkpoint.

The temperature is fitted on images that did not train the model and are not the test split:
a dataset's validation split (``val_split``), or a class-stratified part of the training split
(``val_fraction``, drawn from ``seed`` exactly as ``cncnn train --val-fraction`` draws it, so the
same fraction and seed as the training run give images the model never trained on).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.engine.protocol import stratified_holdout
from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.calibration import calibration_report, fit_temperature
from cncnn_cli.evaluation.evaluate import _dataset_config, _where
from cncnn_cli.models.embedding import DEFAULT_EMBEDDING
from cncnn_cli.utils.device import resolve_device
from cncnn_cli.utils.progress import progress
from cncnn_cli.weights.checkpoint import Checkpoint, load_model, save_checkpoint


@dataclass
class Calibration:
    temperature: float
    #: Calibration figures on the validation images at T = 1 and at the fitted T.
    before: dict
    after: dict
    num_images: int
    validation: str


def calibrate_checkpoint(path: str | Path, out: str | Path, val_fraction: float | None = None,
                         val_split: str | None = None, seed: int = 0, dataset: str | None = None,
                         data_root: str | None = None, batch_size: int = 32, workers: int = DEFAULT_WORKERS,
                         device: str = "auto") -> Calibration:
    """Fit the temperature of the checkpoint at ``path`` and write it with the weights to ``out``."""
    path, out = Path(path), Path(out)
    if (val_fraction is None) == (val_split is None):
        raise CncnnError("calibrate needs validation data, never the test split: give --val-fraction F (held out of "
                         "the train split, as in training) or --val-split S (a dataset's own validation split)"
                         if val_split is None else "give either --val-fraction or --val-split, not both")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise CncnnError(f"--val-fraction {val_fraction}: expected a fraction between 0 and 1 (e.g. 0.1)")
    if val_split == "test":
        raise CncnnError("--val-split test: the temperature must not be fitted on the test split; give a "
                         "validation split or --val-fraction")
    if out.exists() and out.resolve() == path.resolve():
        raise CncnnError(f"--out {out} is the checkpoint being calibrated; write the calibrated one to a new file")
    if out.exists():
        raise CncnnError(f"--out {out} exists; choose a new file (nothing was overwritten)")
    model, info = load_model(path)
    cfg = _dataset_config(path, dict(info.dataset or {}), dataset, data_root)
    options = dict(cfg)
    kind, root = options.pop("type"), options.pop("data_root")
    transform = build_transform(info.preprocess, False)
    if val_split is not None:
        data: Dataset = build_dataset(kind, root, val_split, transform, **options)
        validation = f"{_where(cfg)}, split '{val_split}'"
    else:
        train = build_dataset(kind, root, "train", transform, **options)
        _, held = stratified_holdout([int(label) for _, label in train.samples], val_fraction, seed)
        if not held:
            raise CncnnError(f"--val-fraction {val_fraction} holds out no image of the {len(train)} training images "
                             f"of {_where(cfg)}; raise it")
        data = Subset(train, held)
        validation = f"{_where(cfg)}, {len(held)} images held out of 'train' (--val-fraction {val_fraction}, seed {seed})"
    if len(data) == 0:
        raise CncnnError(f"{validation}: no images to calibrate on")
    logits, labels = _logits(model, data, batch_size, workers, device)
    temperature = fit_temperature(logits, labels)
    save_checkpoint(out, model.state_dict(), Checkpoint(**{**info.__dict__, "temperature": temperature,
                                                           "embedding": info.embedding or DEFAULT_EMBEDDING}))
    return Calibration(temperature, calibration_report(logits, labels),
                       calibration_report(logits, labels, temperature), len(labels), validation)


def _logits(model: torch.nn.Module, data: Dataset, batch_size: int, workers: int,
            device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble logits and labels of every readable image of ``data``."""
    target = resolve_device(device)
    model = model.to(target).eval()
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=target.type == "cuda")
    logits, labels = [], []
    with torch.inference_mode(), progress("calibrating", total=len(data), unit="images") as bar:
        for batch in loader:
            bar.advance(len(batch["paths"]) + batch["skipped"])
            if batch["inputs"].shape[0] == 0:
                continue
            logits.append(model.infer({"inputs": batch["inputs"].to(target)})["logits"].float().cpu())
            labels.append(batch["data_samples"])
    if not logits:
        raise CncnnError("no readable validation images to calibrate on")
    return torch.cat(logits), torch.cat(labels)
