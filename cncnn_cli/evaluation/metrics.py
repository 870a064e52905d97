"""Accuracy metrics: top-1, top-5, mean per-class accuracy, per-classifier top-1; retrieval on request."""
from __future__ import annotations

import torch
from mmengine.evaluator import BaseMetric

from mmengine.registry import METRICS

from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.retrieval import retrieval_metrics
from cncnn_cli.models.embedding import EmbeddingCapture


def _percent(hits: torch.Tensor) -> float:
    """Mean of per-item scores in [0, 1] as a percentage, in float64 (float32 prints 94.49999...)."""
    return round(100.0 * hits.double().mean().item(), 4)


def accuracy_report(ensemble: torch.Tensor, heads: dict[str, torch.Tensor], labels: torch.Tensor) -> dict:
    """Percentages over N images from logits (N×K) and labels (N)."""
    num_images, num_classes = ensemble.shape
    top5 = ensemble.topk(min(5, num_classes), dim=1).indices
    predicted = top5[:, 0]
    correct = predicted == labels
    per_class = torch.zeros(num_classes).index_add_(0, labels, correct.float())
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = counts > 0
    report = {
        "top1": _percent(correct),
        "top5": _percent((top5 == labels[:, None]).any(1)),
        "mean_class_accuracy": _percent(per_class[present].double() / counts[present]),
        "num_images": int(num_images),
        "heads": {name: _percent(logits.argmax(1) == labels) for name, logits in heads.items()},
    }
    report["heads"]["ensemble"] = report["top1"]
    return report


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted ones."""
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


@METRICS.register_module(name="cncnn_accuracy")
class AccuracyMetric(BaseMetric):
    """mmengine metric over the model's predict-mode outputs (one dict per image).

    Validation (mmengine's ValLoop) and ``cncnn eval`` both feed it, so both report the same numbers.
    With ``retrieval`` (training's ``retrieval=True``) it also keeps each image's embedding, read
    by :attr:`capture` during the same forward pass, and adds leave-one-out Recall@K and MAP@R as
    ``retrieval_recall_at_K`` and ``retrieval_map_at_r`` (flat names that every tracker accepts).
    """

    default_prefix = ""

    def __init__(self, prefix: str | None = None, retrieval: bool = False) -> None:
        # Under DDP the ranks' results are gathered in memory (all_gather_object), on NCCL and gloo
        # alike. mmengine's default, "cpu", passes them through pickle files in ./.dist_test/ of the
        # current folder: left behind in the user's folder, and wrong on nodes that do not share it.
        super().__init__(collect_device="gpu", prefix=prefix)
        self.retrieval = retrieval
        #: Under ``retrieval``: the embedding capture on the evaluated model (``EmbeddingHook`` sets it).
        self.capture: EmbeddingCapture | None = None

    def process(self, data_batch, data_samples) -> None:
        """Keep each image's logits on the host, copied there in one transfer per batch.

        A copy per tensor would wait for the GPU (1 + heads) times per image. The per-image rows
        are cloned so that gathering results across ranks pickles each row, not the whole batch.
        """
        if not data_samples:
            return
        names = list(data_samples[0]["heads"])
        packed = torch.stack([torch.cat([s["logits"].float(), *(s["heads"][n].float() for n in names)])
                              for s in data_samples]).cpu()
        embeddings = self._embeddings(len(data_samples))
        for index, (sample, row) in enumerate(zip(data_samples, packed)):
            parts = row.split(sample["logits"].shape[0])
            result = {"logits": parts[0].clone(),
                      "heads": {name: part.clone() for name, part in zip(names, parts[1:])},
                      "label": int(sample["label"])}
            if embeddings is not None:
                result["embedding"] = embeddings[index].clone()
            self.results.append(result)

    def _embeddings(self, count: int) -> torch.Tensor | None:
        """The batch's embeddings, one row per image, or None when retrieval is off."""
        if not self.retrieval:
            return None
        if self.capture is None:
            raise CncnnError("retrieval=True: the evaluation has no embedding capture (EmbeddingHook)", exit_code=1)
        embeddings = self.capture.take().cpu()
        if len(embeddings) != count:
            raise CncnnError(f"retrieval: {len(embeddings)} embeddings for {count} images", exit_code=1)
        return embeddings

    def compute_metrics(self, results: list) -> dict:
        ensemble, heads, labels = stacked(results)
        report = accuracy_report(ensemble, heads, labels)
        flat = {k: v for k, v in report.items() if k != "heads"}
        flat.update({f"{name}_top1": value for name, value in report["heads"].items()})
        if self.retrieval:
            found = retrieval_metrics(torch.stack([r["embedding"] for r in results]), labels)
            flat.update({f"retrieval_{key.replace('@', '_at_')}": value for key, value in found.items()
                         if key.startswith(("recall@", "map@"))})
        return flat


def stacked(results: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The metric's per-image results as ensemble logits (N×K), per-classifier logits and labels (N)."""
    ensemble = torch.stack([r["logits"] for r in results])
    heads = {name: torch.stack([r["heads"][name] for r in results]) for name in results[0]["heads"]}
    return ensemble, heads, torch.tensor([r["label"] for r in results])
