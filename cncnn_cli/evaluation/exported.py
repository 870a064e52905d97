"""Evaluating an exported ``.onnx`` model on a dataset split: ``cncnn eval model.onnx``.

The images come through the dataset and its loader exactly as for a checkpoint (the preprocessing
read from the file's metadata), the forward is onnxruntime's, and the report is the same
:class:`~cncnn_cli.evaluation.evaluate.Evaluation`, so the table, ``--json`` and ``--out`` reports
are the checkpoint's. The file outputs the ensemble logits alone: ``heads`` holds the ensemble only,
and a mistake has no attention mask.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import FineGrainedDataset, build_dataset
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.deploy.onnx_runtime import OnnxModel
from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.calibration import calibration_report
from cncnn_cli.evaluation.evaluate import Evaluation, Mistake, _dataset_config, _where, class_name_note
from cncnn_cli.evaluation.metrics import accuracy_report, confusion_matrix
from cncnn_cli.utils.console import say
from cncnn_cli.utils.progress import progress


def evaluate_onnx(path: str | Path, dataset: str | None = None, data_root: str | None = None, split: str = "test",
                  batch_size: int = 32, workers: int = DEFAULT_WORKERS, tta: str = "none", mistakes: int = 0,
                  show_progress: bool = False, threads: int | None = None) -> Evaluation:
    """Accuracy of the exported model at ``path``, as :func:`~cncnn_cli.evaluation.evaluate.evaluate_checkpoint`.

    The file's ``logits`` are divided by the checkpoint's temperature; they are multiplied back, so
    that the report's plain and calibrated figures are the checkpoint's.
    """
    if tta not in ("none", "flip"):
        raise CncnnError(f"--tta {tta}: expected none or flip")
    model = OnnxModel(path, threads)
    dataset_cfg = _dataset_config(path, dict(model.dataset or {}), dataset, data_root)
    options = dict(dataset_cfg)
    data = build_dataset(options.pop("type"), options.pop("data_root"), split,
                         build_transform(model.preprocess, False), **options)
    if len(data.classes) != len(model.classes):
        raise CncnnError(f"{path} predicts {len(model.classes)} classes but {_where(dataset_cfg)} has "
                         f"{len(data.classes)}; evaluate on the dataset it was trained for")
    note = class_name_note(model.classes, data.classes, _where(dataset_cfg))
    if note:
        say(note)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    plain, flipped, labels, paths, skipped = [], [], [], [], 0
    with progress(f"evaluating on {split}", total=len(data), unit="images", enabled=show_progress) as bar:
        for batch in loader:
            skipped += batch["skipped"]
            bar.advance(len(batch["paths"]) + batch["skipped"])
            if batch["inputs"].shape[0] == 0:
                continue
            paths += batch["paths"]
            labels.append(batch["data_samples"])
            plain.append(torch.from_numpy(model.run(batch["inputs"].numpy())) * model.temperature)
            if tta == "flip":
                mirrored = batch["inputs"].flip(3).numpy()
                flipped.append((plain[-1] + torch.from_numpy(model.run(mirrored)) * model.temperature) / 2)
    if not plain:
        raise CncnnError(f"no readable images in {dataset_cfg['type']} split '{split}'")
    truth = torch.cat(labels)
    ensemble = torch.cat(flipped if tta == "flip" else plain).float()
    report = accuracy_report(ensemble, {}, truth)
    calibrated = model.temperature if model.temperature != 1.0 else None
    report["calibration"] = {"plain": calibration_report(ensemble, truth),
                             "calibrated": None if calibrated is None else
                             calibration_report(ensemble, truth, calibrated)}
    return Evaluation(report, confusion_matrix(ensemble.argmax(1), truth, len(model.classes)), list(model.classes),
                      skipped, ensemble, accuracy_report(torch.cat(plain).float(), {}, truth) if flipped else None,
                      truth, paths, _most_confident_mistakes(data, paths, ensemble, truth, mistakes), calibrated)


def _most_confident_mistakes(data: FineGrainedDataset, paths: list[str], logits: torch.Tensor, labels: torch.Tensor,
                             count: int) -> list[Mistake]:
    """The ``count`` wrong predictions with the highest probability, re-read for the report (no masks)."""
    if count <= 0:
        return []
    scores, predicted = torch.softmax(logits, 1).max(1)
    wrong = (predicted != labels).nonzero().flatten()
    index_of = {str(sample_path): i for i, (sample_path, _) in enumerate(data.samples)}
    found = []
    for row in wrong[scores[wrong].argsort(descending=True)][:count].tolist():
        sample = data[index_of[paths[row]]]
        if sample is not None:  # a file changed since the pass: left out
            found.append(Mistake(paths[row], sample["inputs"].permute(1, 2, 0).numpy(), None, int(labels[row]),
                                 int(predicted[row]), float(scores[row])))
    return found
