"""The public Python API for inference: a classifier loaded from one checkpoint.

    from cncnn_cli.apis.inference import Predictor
    predictor = Predictor.from_checkpoint("work_dirs/cub/best.safetensors")
    for result in predictor.predict(["bird.jpg"], topk=5):
        print(result.image, result.predictions[0])
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from cncnn_cli.weights.checkpoint import Checkpoint, load_model
from cncnn_cli.utils.device import resolve_device
from cncnn_cli.errors import CncnnError
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.deploy.predictions import Prediction, chunks, load_chunk, non_finite, top_k
from cncnn_cli.models.compile import compile_model
from cncnn_cli.models.embedding import DEFAULT_EMBEDDING, EmbeddingCapture


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
        #: Logits are divided by it before the softmax (``cncnn calibrate``); top-1 never changes.
        self.temperature = info.temperature or 1.0
        self.embedding = info.embedding or DEFAULT_EMBEDDING
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
        k = max(1, min(topk, len(self.classes)))
        for chunk in chunks(images, batch_size):
            results, tensors, slots = self._load(chunk, Prediction)
            if tensors:
                logits = self.forward(torch.stack(tensors))["logits"]
                probs = torch.softmax(logits.float() / self.temperature, dim=1).cpu()
                broken = (~torch.isfinite(probs).all(dim=1)).nonzero()
                if len(broken):
                    raise non_finite(self.source, results[slots[int(broken[0])]].image)
                scores, indices = probs.topk(k, dim=1)
                for slot, predictions in zip(slots, top_k(zip(scores.tolist(), indices.tolist()), self.classes)):
                    results[slot].predictions = predictions
            yield from results

    def embed(self, images: Iterable[str | Path | Image.Image], batch_size: int = 16) -> list["Embedded"]:
        """One L2-normalised vector per image: the checkpoint's embedding (:mod:`cncnn_cli.models.embedding`)."""
        return list(self.iter_embed(images, batch_size))

    def iter_embed(self, images: Iterable[str | Path | Image.Image], batch_size: int = 16) -> Iterator["Embedded"]:
        """:meth:`embed` one batch at a time, in input order, with flat memory (as :meth:`iter_predict`)."""
        with EmbeddingCapture(self.model, self.embedding, len(self.classes)) as capture:
            for chunk in chunks(images, batch_size):
                results, tensors, slots = self._load(chunk, Embedded)
                if tensors:
                    self.forward(torch.stack(tensors))
                    vectors = capture.take().cpu()
                    if not torch.isfinite(vectors).all():
                        raise CncnnError(f"{self.source} produces non-finite embeddings: its weights are broken "
                                         f"(NaN/inf)", exit_code=1)
                    for slot, vector in zip(slots, vectors):
                        results[slot].vector = vector
                yield from results

    def _load(self, chunk: list, entry: type) -> tuple[list, list[torch.Tensor], list[int]]:
        """A chunk's result entries (``entry(image=name)``; an unreadable file's with its error, an
        entry passed in kept as it is), the preprocessed tensors, and the slot of each tensor's entry."""
        return load_chunk(chunk, entry, self.preprocess)


@dataclass
class Embedded:
    """One image's embedding (a D-vector of unit length), or an error message."""

    image: str
    vector: torch.Tensor | None = None
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "embedding": self.vector.tolist()}
