"""Evaluating a checkpoint on a dataset split (the engine behind ``cncnn eval``)."""
from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import FineGrainedDataset, build_dataset, dataset_class
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.calibration import calibration_report
from cncnn_cli.evaluation.retrieval import retrieval_metrics
from cncnn_cli.models.embedding import DEFAULT_EMBEDDING, EmbeddingCapture
from cncnn_cli.evaluation.metrics import AccuracyMetric, accuracy_report, confusion_matrix, stacked
from cncnn_cli.models.classifier import Classifier
from cncnn_cli.models.compile import compile_model
from cncnn_cli.utils.console import say
from cncnn_cli.utils.device import resolve_device
from cncnn_cli.utils.progress import progress
from cncnn_cli.weights.checkpoint import load_model


@dataclass
class Mistake:
    """One wrongly classified image, as the model saw it."""

    path: str
    image: np.ndarray  # H×W×3 uint8, after the checkpoint's eval preprocessing
    #: The low-level spatial mask (SA3, h×w); None for models without attention maps.
    mask: np.ndarray | None
    label: int
    predicted: int
    score: float  # softmax probability of the predicted class


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
    #: True class of each row of ``logits``, and its image file.
    labels: torch.Tensor | None = None
    paths: list[str] = field(default_factory=list)
    #: The most confident mistakes, most confident first (``mistakes=N`` asks for them).
    mistakes: list[Mistake] = field(default_factory=list)
    #: The checkpoint's temperature (``cncnn calibrate``); None when it has none.
    temperature: float | None = None
    #: Under ``retrieval=True``: the N×D embeddings of the plain pass, one row per row of ``logits``.
    embeddings: torch.Tensor | None = None


def evaluate_checkpoint(path: str | Path, dataset: str | None = None, data_root: str | None = None,
                        split: str = "test", batch_size: int = 32, workers: int = DEFAULT_WORKERS,
                        device: str = "auto", tta: str = "none", mistakes: int = 0,
                        show_progress: bool = False, compile: bool = False, retrieval: bool = False) -> Evaluation:
    """Accuracy of the checkpoint at ``path``; ``tta='flip'`` averages each image's logits with its mirror's.

    ``mistakes=N`` also returns the N most confident mistakes with their images and masks;
    ``show_progress`` draws a progress bar on stderr; ``compile`` runs the forward under
    torch.compile (:mod:`cncnn_cli.models.compile`). The report has ``calibration``: ECE, NLL
    and Brier score plain and, for a calibrated checkpoint, at its temperature. ``retrieval``
    adds ``retrieval``: leave-one-out Recall@K and MAP@R of the checkpoint's embedding.
    """
    if tta not in ("none", "flip"):
        raise CncnnError(f"--tta {tta}: expected none or flip")
    model, info = load_model(path)
    dataset_cfg = _dataset_config(path, dict(info.dataset or {}), dataset, data_root)
    options = dict(dataset_cfg)
    data = build_dataset(options.pop("type"), options.pop("data_root"), split,
                         build_transform(info.preprocess, False), **options)
    num_classes = len(info.classes)
    if len(data.classes) != num_classes:
        raise CncnnError(f"{path} predicts {num_classes} classes but {_where(dataset_cfg)} has "
                         f"{len(data.classes)}; evaluate on the dataset it was trained for")
    note = class_name_note(info.classes, data.classes, _where(dataset_cfg))
    if note:
        say(note)
    target = resolve_device(device)
    model = model.to(target).eval()
    if compile:
        compile_model(model, target)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=target.type == "cuda")
    metrics = {"plain": AccuracyMetric(), "flip": AccuracyMetric()}
    skipped, paths, embeddings = 0, [], []
    capture = EmbeddingCapture(model, info.embedding or DEFAULT_EMBEDDING, num_classes) if retrieval else nullcontext()
    with capture, torch.inference_mode(), progress(f"evaluating on {split}", total=len(data), unit="images",
                                          enabled=show_progress) as bar:
        for batch in loader:
            skipped += batch["skipped"]
            bar.advance(len(batch["paths"]) + batch["skipped"])
            if batch["inputs"].shape[0] == 0:
                continue
            paths += batch["paths"]
            outputs = model.test_step(batch)  # the path validation takes
            if retrieval:
                embeddings.append(capture.take().cpu())
            metrics["plain"].process(batch, outputs)
            if tta == "flip":
                mirrored = model.test_step({**batch, "inputs": batch["inputs"].flip(3)})
                if retrieval:
                    capture.take()  # the embedding is the plain image's
                metrics["flip"].process(batch, [_average(a, b) for a, b in zip(outputs, mirrored)])
    if not metrics["plain"].results:
        raise CncnnError(f"no readable images in {dataset_cfg['type']} split '{split}'")
    reported = "flip" if tta == "flip" else "plain"
    ensemble, heads, truth = stacked(metrics[reported].results)
    report = accuracy_report(ensemble, heads, truth)
    report["calibration"] = {"plain": calibration_report(ensemble, truth),
                             "calibrated": None if info.temperature is None else
                             calibration_report(ensemble, truth, info.temperature)}
    if retrieval:
        report["retrieval"] = {"embedding": info.embedding or DEFAULT_EMBEDDING,
                               **retrieval_metrics(torch.cat(embeddings).to(target), truth.to(target))}
    return Evaluation(report,
                      confusion_matrix(ensemble.argmax(1), truth, num_classes), list(info.classes), skipped,
                      ensemble, accuracy_report(*stacked(metrics["plain"].results)) if reported == "flip" else None,
                      truth, paths, _most_confident_mistakes(model, data, paths, ensemble, truth, mistakes),
                      info.temperature, torch.cat(embeddings) if retrieval else None)


def _dataset_config(path: str | Path, saved: dict, dataset: str | None, data_root: str | None) -> dict:
    """The dataset to evaluate on: the checkpoint's, with ``--dataset`` / ``--data-root`` over it.

    Another dataset than the checkpoint's takes none of its root or options: they describe a
    different set. Its root is ``--data-root``, or none for a dataset that needs none (demo).
    """
    if dataset and dataset != saved.get("type"):
        if data_root:
            return {"type": dataset, "data_root": data_root}
        default = inspect.signature(dataset_class(dataset)).parameters.get("data_root")
        if default is None or default.default is inspect.Parameter.empty:
            raise CncnnError(f"--dataset {dataset}: also pass --data-root DIR, the folder of the {dataset} "
                             f"copy to evaluate on ({path} was trained on "
                             f"{_where(saved) if saved.get('type') else 'an unnamed dataset'})")
        return {"type": dataset, "data_root": default.default}
    config = dict(saved)
    if data_root:
        config["data_root"] = data_root
    if not config.get("type") or config.get("data_root") is None:
        raise CncnnError(f"{path} does not name its dataset (converted checkpoints may not): "
                         f"pass --dataset NAME --data-root DIR")
    return config


def _where(dataset_cfg: dict) -> str:
    """``cub at data/CUB_200_2011``, or ``demo (no data root)``: the dataset and the root actually used."""
    root = dataset_cfg.get("data_root")
    return f"{dataset_cfg['type']} at {root}" if root else f"{dataset_cfg['type']} (no data root)"


def class_name_note(trained: list[str], evaluated: list[str], where: str, shown: int = 3) -> str | None:
    """A ``note:`` line when the two class lists have one length but differ by name; None when they agree.

    Accuracy compares class indices, so a renamed or reordered folder still gets a number: the
    note says which names disagree (the first ``shown`` pairs), so a wrong dataset is noticed.
    """
    pairs = [(new, old) for new, old in zip(evaluated, trained) if new != old]
    if not pairs:
        return None
    listed = ", ".join(f"{new}≠{old}" for new, old in pairs[:shown])
    if len(pairs) > shown:
        listed += f", … {len(pairs) - shown} more of {len(trained)}"
    order = " (the same names in another order)" if sorted(trained) == sorted(evaluated) else ""
    return (f"note: the classes of {where} differ from the checkpoint's by name{order} ({listed}); "
            f"accuracy assumes class i is the same class in both")


def _average(a: dict, b: dict) -> dict:
    """One image's two predict-mode outputs (itself and its mirror), averaged logit by logit."""
    return {"logits": (a["logits"] + b["logits"]) / 2, "label": a["label"],
            "heads": {name: (a["heads"][name] + b["heads"][name]) / 2 for name in a["heads"]}}


def _most_confident_mistakes(model: Classifier, data: FineGrainedDataset, paths: list[str], logits: torch.Tensor,
                             labels: torch.Tensor, count: int) -> list[Mistake]:
    """The ``count`` wrong predictions with the highest probability, re-read and run once more for their masks."""
    if count <= 0:
        return []
    scores, predicted = torch.softmax(logits.float(), 1).max(1)
    wrong = (predicted != labels).nonzero().flatten()
    chosen = wrong[scores[wrong].argsort(descending=True)][:count].tolist()
    if not chosen:
        return []
    index_of = {str(sample_path): i for i, (sample_path, _) in enumerate(data.samples)}
    samples = [(row, data[index_of[paths[row]]]) for row in chosen]
    chosen = [row for row, sample in samples if sample is not None]  # a file changed since the pass: left out
    if not chosen:
        return []
    images = torch.stack([sample["inputs"] for _, sample in samples if sample is not None])
    with torch.inference_mode():
        maps = model.infer({"inputs": images.to(next(model.parameters()).device)})["maps"]
    low_level = None if maps is None else maps[0].float().cpu().numpy()
    return [Mistake(paths[row], images[i].permute(1, 2, 0).numpy(), None if low_level is None else low_level[i],
                    int(labels[row]), int(predicted[row]), float(scores[row])) for i, row in enumerate(chosen)]
