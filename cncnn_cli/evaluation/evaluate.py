"""Evaluating a checkpoint on a dataset split (the engine behind ``cncnn eval``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cncnn_cli.weights.checkpoint import load_model
from cncnn_cli.data.collate import collate
from cncnn_cli.utils.device import resolve_device
from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.metrics import AccuracyMetric, accuracy_report, confusion_matrix, stacked
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.data.dataset import build_dataset


@dataclass
class Evaluation:
    report: dict
    confusion: torch.Tensor
    classes: list[str]
    skipped: int
    #: The ensemble logits the report was computed from (flip-averaged under ``tta='flip'``).
    logits: torch.Tensor
    #: Under ``tta='flip'``: the same report without the flips, so both can be quoted.
    without_tta: dict | None = None


def evaluate_checkpoint(path: str | Path, dataset: str | None = None, data_root: str | None = None,
                        split: str = "test", batch_size: int = 32, workers: int = 2,
                        device: str = "auto", tta: str = "none") -> Evaluation:
    """Accuracy of the checkpoint at ``path``; ``tta='flip'`` averages each image's logits with its mirror's."""
    if tta not in ("none", "flip"):
        raise CncnnError(f"--tta {tta}: expected none or flip")
    model, info = load_model(path)
    dataset_cfg = dict(info.dataset or {})
    if dataset:
        dataset_cfg = {"type": dataset, "data_root": data_root or dataset_cfg.get("data_root")}
    elif data_root:
        dataset_cfg["data_root"] = data_root
    if not dataset_cfg.get("type") or dataset_cfg.get("data_root") is None:
        raise CncnnError(f"{path} does not name its dataset (converted checkpoints may not): "
                         f"pass --dataset NAME --data-root DIR")
    options = dict(dataset_cfg)
    data = build_dataset(options.pop("type"), options.pop("data_root"), split,
                         build_transform(info.preprocess, False), **options)
    num_classes = len(info.classes)
    if len(data.classes) != num_classes:
        raise CncnnError(f"{path} predicts {num_classes} classes but {dataset_cfg['type']} at "
                         f"{dataset_cfg['data_root']} has {len(data.classes)}; evaluate on the dataset it was "
                         f"trained for")
    target = resolve_device(device)
    model = model.to(target).eval()
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=target.type == "cuda")
    metrics = {"plain": AccuracyMetric(), "flip": AccuracyMetric()}
    skipped = 0
    with torch.inference_mode():
        for batch in loader:
            skipped += batch["skipped"]
            if batch["inputs"].shape[0] == 0:
                continue
            outputs = model.test_step(batch)  # the path validation takes
            metrics["plain"].process(batch, outputs)
            if tta == "flip":
                mirrored = model.test_step({**batch, "inputs": batch["inputs"].flip(3)})
                metrics["flip"].process(batch, [_average(a, b) for a, b in zip(outputs, mirrored)])
    if not metrics["plain"].results:
        raise CncnnError(f"no readable images in {dataset_cfg['type']} split '{split}'")
    reported = "flip" if tta == "flip" else "plain"
    ensemble, heads, truth = stacked(metrics[reported].results)
    return Evaluation(accuracy_report(ensemble, heads, truth),
                      confusion_matrix(ensemble.argmax(1), truth, num_classes), list(info.classes), skipped,
                      ensemble, accuracy_report(*stacked(metrics["plain"].results)) if reported == "flip" else None)


def _average(a: dict, b: dict) -> dict:
    """One image's two predict-mode outputs (itself and its mirror), averaged logit by logit."""
    return {"logits": (a["logits"] + b["logits"]) / 2, "label": a["label"],
            "heads": {name: (a["heads"][name] + b["heads"][name]) / 2 for name in a["heads"]}}
