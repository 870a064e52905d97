"""The public Python API for inference: a classifier loaded from one checkpoint.

    from cncnn_cli.apis.inference import Predictor
    predictor = Predictor.from_checkpoint("work_dirs/cub/best.safetensors")
    for result in predictor.predict(["bird.jpg"], topk=5):
        print(result.image, result.predictions[0])
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from PIL import Image

from cncnn_cli.weights.checkpoint import Checkpoint, load_model
from cncnn_cli.utils.device import resolve_device
from cncnn_cli.errors import CncnnError
from cncnn_cli.data.images import load_rgb
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.models.compile import compile_model


@dataclass
class Prediction:
    """One image's result: top-k ``{"label", "index", "score"}`` dicts, or an error message."""

    image: str
    predictions: list[dict] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "predictions": self.predictions}


class Predictor:
    """A trained or converted CN-CNN with its own preprocessing and class names.

    ``compile=True`` runs the forward under torch.compile (:mod:`cncnn_cli.models.compile`):
    the first batch, and each new batch size, compiles first.
    """

    def __init__(self, model: torch.nn.Module, info: Checkpoint, device: str | torch.device = "auto",
                 compile: bool = False) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        if compile:
            compile_model(self.model, self.device)
        self.info = info
        self.classes = info.classes
        self.source: str | Path = "the model"  # named in errors; the checkpoint's path once loaded from one
        self.transform = build_transform(info.preprocess, train=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", compile: bool = False) -> "Predictor":
        model, info = load_model(path)
        predictor = cls(model, info, device, compile)
        predictor.source = path
        return predictor

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A PIL RGB image → the uint8 3×H×W tensor the model's preprocessor expects."""
        return self.transform(image)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> dict:
        """uint8 B×3×H×W → the model's outputs (``logits``, ``heads``, and maps when it has them)."""
        return self.model.infer({"inputs": batch})

    def predict(self, images: Iterable[str | Path | Image.Image], topk: int = 5,
                batch_size: int = 16) -> list[Prediction]:
        """Top-k softmax scores of the ensemble logits; an unreadable file gets an error entry."""
        return list(self.iter_predict(images, topk, batch_size))

    def iter_predict(self, images: Iterable[str | Path | Image.Image], topk: int = 5,
                     batch_size: int = 16) -> Iterator[Prediction]:
        """:meth:`predict` one batch at a time, in input order: ``images`` is read lazily and
        nothing is kept between batches, so memory stays flat on inputs of any length.

        An item that is a :class:`Prediction` already (an error entry the caller made, e.g. for an
        empty folder) is passed through in its place. Non-finite scores (broken weights) raise a
        :class:`CncnnError` (exit 1) rather than yield NaN."""
        if batch_size < 1:
            raise CncnnError(f"batch_size must be at least 1, not {batch_size}")
        k = max(1, min(topk, len(self.classes)))
        for chunk in _chunks(images, batch_size):
            results, tensors, slots = [], [], []
            for item in chunk:
                if isinstance(item, Prediction):
                    results.append(item)
                    continue
                name = "<image>" if isinstance(item, Image.Image) else str(item)
                try:
                    image = item if isinstance(item, Image.Image) else load_rgb(item)
                    tensors.append(self.preprocess(image))
                    slots.append(len(results))
                    results.append(Prediction(image=name))
                except CncnnError as exc:
                    results.append(Prediction(image=name, error=str(exc)))
            if tensors:
                logits = self.forward(torch.stack(tensors))["logits"]
                probs = torch.softmax(logits.float(), dim=1).cpu()
                broken = (~torch.isfinite(probs).all(dim=1)).nonzero()
                if len(broken):
                    image = results[slots[int(broken[0])]].image
                    raise CncnnError(f"{self.source} produces non-finite scores for {image}: its weights are broken "
                                     f"(NaN/inf), e.g. saved from a training run that diverged", exit_code=1)
                scores, indices = probs.topk(k, dim=1)
                for slot, row_scores, row_indices in zip(slots, scores.tolist(), indices.tolist()):
                    results[slot].predictions = [
                        {"label": self.classes[i], "index": i, "score": s} for s, i in zip(row_scores, row_indices)
                    ]
            yield from results


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
