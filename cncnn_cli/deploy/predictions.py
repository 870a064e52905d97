"""What ``predict`` yields, and the batching both predictors share (the torch one and onnxruntime's).

Torch-free, so that the folder walk of ``cncnn predict`` and its writers, which make and read
:class:`Prediction` entries, serve an ``.onnx`` model without importing torch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from PIL import Image

from cncnn_cli.data.images import load_rgb
from cncnn_cli.errors import CncnnError


@dataclass
class Prediction:
    """One image's result: top-k ``{"label", "index", "score"}`` dicts, or an error message."""

    image: str
    predictions: list[dict] = field(default_factory=list)
    error: str | None = None
    #: With an unknown threshold (galleries): whether the image is far from every class.
    unknown: bool | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        if self.unknown is not None:
            label = "unknown" if self.unknown else self.predictions[0]["label"]
            return {"image": self.image, "label": label, "unknown": self.unknown, "predictions": self.predictions}
        return {"image": self.image, "predictions": self.predictions}


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter), read lazily."""
    if size < 1:
        raise CncnnError(f"batch_size must be at least 1, not {size}")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def load_chunk(chunk: list, entry: type, preprocess: Callable[[Image.Image], Any]) -> tuple[list, list, list[int]]:
    """A chunk's result entries (``entry(image=name)``; an unreadable file's with its error, an
    entry passed in kept as it is), the preprocessed images, and the slot of each image's entry."""
    results, arrays, slots = [], [], []
    for item in chunk:
        if isinstance(item, entry):
            results.append(item)
            continue
        name = "<image>" if isinstance(item, Image.Image) else str(item)
        try:
            image = item if isinstance(item, Image.Image) else load_rgb(item)
            arrays.append(preprocess(image))
            slots.append(len(results))
            results.append(entry(image=name))
        except CncnnError as exc:
            results.append(entry(image=name, error=str(exc)))
    return results, arrays, slots


def top_k(rows: Iterable[tuple[list[float], list[int]]], classes: list[str]) -> list[list[dict]]:
    """Each image's (scores, class indices), best first, as the ``predictions`` list of its entry."""
    return [[{"label": classes[i], "index": i, "score": s} for s, i in zip(scores, indices)]
            for scores, indices in rows]


def non_finite(source: object, image: str) -> CncnnError:
    """The error for a model whose scores are NaN or infinite (exit 1): the weights, not the image."""
    return CncnnError(f"{source} produces non-finite scores for {image}: its weights are broken "
                      f"(NaN/inf), e.g. saved from a training run that diverged", exit_code=1)
