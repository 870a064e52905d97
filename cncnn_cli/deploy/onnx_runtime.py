"""An ``.onnx`` file from ``cncnn export`` as a predictor: onnxruntime, the file's metadata, no torch.

The file carries what a runtime needs in its ``metadata_props`` (each value a JSON document):
``classes``, ``preprocess`` (resize and crop; the normalization is inside the graph) and
``temperature`` (already divided into the ``logits`` output). Its one input is ``images``, uint8
RGB N×3×H×W at the crop size.

    from cncnn_cli.deploy.onnx_runtime import OnnxPredictor
    for result in OnnxPredictor.from_file("cub.onnx").predict(["bird.jpg"], topk=5):
        print(result.image, result.predictions[0])
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cncnn_cli.data.images import shown
from cncnn_cli.deploy.predictions import Prediction, chunks, load_chunk, non_finite, top_k
from cncnn_cli.deploy.preprocess import eval_pixels, size_pair
from cncnn_cli.errors import CncnnError, first_line

INSTALL_HINT = 'pip install "cncnn[export]"'
#: The metadata keys a cncnn ONNX file must carry.
REQUIRED_METADATA = ("classes", "preprocess")


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix, as ``cncnn export`` chose the format)."""
    return Path(path).suffix.lower() == ".onnx"


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or one line with the install hint (exit 2)."""
    try:
        import onnxruntime
    except ImportError:
        raise CncnnError(f"running an .onnx model needs the onnxruntime package, which is not installed: "
                         f"{INSTALL_HINT}") from None
    return onnxruntime


class OnnxModel:
    """An exported cncnn model loaded into onnxruntime (CPU), its metadata and input checked on load.

    ``threads``: onnxruntime's intra-op threads (default: its own, one per core).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        ort = import_onnxruntime()
        if not self.path.is_file():
            raise CncnnError(f"{shown(self.path)}: no such file" if not self.path.exists() else
                             f"{shown(self.path)}: not a file; give the .onnx model `cncnn export` wrote")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for unreadable files
            raise CncnnError(f"{shown(self.path)}: not an ONNX model onnxruntime can load ({first_line(exc)})") \
                from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.metadata = _parse_metadata(self.path, metadata)
        self.classes: list[str] = self.metadata["classes"]
        self.preprocess: dict = self.metadata["preprocess"]
        #: The calibration temperature the ``logits`` output is already divided by (1: uncalibrated).
        self.temperature = float(self.metadata.get("temperature", 1.0))
        #: The dataset the checkpoint was trained on (exports of cncnn ≥ this version carry it).
        self.dataset: dict | None = self.metadata.get("dataset")
        self.crop = size_pair(self.preprocess["crop"])
        _check_signature(self.path, self.session, self.crop, len(self.classes))
        fixed = self.session.get_inputs()[0].shape[0]
        #: The batch size of a file exported with ``--batch N``; None for a dynamic batch.
        self.batch: int | None = fixed if isinstance(fixed, int) else None

    def run(self, images: np.ndarray) -> np.ndarray:
        """uint8 N×3×H×W → float32 N×K logits (divided by the temperature), for any N."""
        if self.batch is None:
            return self.session.run(["logits"], {"images": images})[0]
        return np.concatenate([self.session.run(["logits"], {"images": stacked})[0][:real]
                               for stacked, real in batches(images, self.batch, fixed=True)])


def _parse_metadata(path: Path, metadata: dict[str, str]) -> dict:
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise CncnnError(f"{shown(path)}: an ONNX model without cncnn's metadata (no {', '.join(missing)}); "
                         f"cncnn runs the files `cncnn export CHECKPOINT.safetensors {path.name}` writes")
    try:
        values = {key: json.loads(value) for key, value in metadata.items()
                  if key in (*REQUIRED_METADATA, "temperature", "dataset", "quantization")}
        classes, preprocess = values["classes"], values["preprocess"]
        valid = (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
                 and isinstance(preprocess, dict) and {"resize", "crop"} <= set(preprocess))
        if valid:
            size_pair(preprocess["resize"]), size_pair(preprocess["crop"])
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise CncnnError(f"{shown(path)}: its cncnn metadata is damaged (classes must be a list of names, "
                         f"preprocess must give resize and crop); export it again with `cncnn export`")
    return values


def _check_signature(path: Path, session: Any, crop: tuple[int, int], num_classes: int) -> None:
    """One input ``images``, uint8 N×3×H×W at the crop size; one output ``logits``, N×K."""
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def fits(shape: list, expected: tuple) -> bool:
        return len(shape) == len(expected) and all(want is None or not isinstance(got, int) or got == want
                                                   for got, want in zip(shape, expected))

    if len(inputs) != 1 or inputs[0].name != "images" or inputs[0].type != "tensor(uint8)" \
            or not fits(inputs[0].shape, (None, 3, *crop)):
        found = ", ".join(f"{i.name} {i.type} {'×'.join(map(str, i.shape))}" for i in inputs)
        raise CncnnError(f"{shown(path)}: its input is {found or 'missing'}; cncnn expects one input `images`, "
                         f"uint8 N×3×{crop[0]}×{crop[1]} (the crop size in its metadata), as `cncnn export` writes")
    if not any(o.name == "logits" and fits(o.shape, (None, num_classes)) for o in outputs):
        found = ", ".join(f"{o.name} {'×'.join(map(str, o.shape))}" for o in outputs)
        raise CncnnError(f"{shown(path)}: its outputs are {found}; cncnn expects `logits`, N×{num_classes} "
                         f"(one score per class in its metadata), as `cncnn export` writes")


class OnnxPredictor:
    """:class:`~cncnn_cli.apis.inference.Predictor`'s ``predict`` for an exported file, through onnxruntime."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.classes = model.classes
        self.source: str | Path = model.path  # named in errors

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> "OnnxPredictor":
        return cls(OnnxModel(path, threads))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """A PIL RGB image → uint8 3×H×W, the same pixels as the checkpoint's eval transform."""
        return eval_pixels(image, self.model.preprocess)

    def predict(self, images: Iterable[str | Path | Image.Image], topk: int = 5,
                batch_size: int = 16) -> list[Prediction]:
        return list(self.iter_predict(images, topk, batch_size))

    def iter_predict(self, images: Iterable[str | Path | Image.Image], topk: int = 5,
                     batch_size: int = 16) -> Iterator[Prediction]:
        """Top-k softmax scores, one batch at a time in input order (as the torch predictor's)."""
        k = max(1, min(topk, len(self.classes)))
        for chunk in chunks(images, batch_size):
            results, arrays, slots = load_chunk(chunk, Prediction, self.preprocess)
            if arrays:
                probs = softmax(self.model.run(np.stack(arrays)))
                broken = np.flatnonzero(~np.isfinite(probs).all(axis=1))
                if len(broken):
                    raise non_finite(self.source, results[slots[int(broken[0])]].image)
                indices = np.argsort(-probs, axis=1, kind="stable")[:, :k]
                scores = np.take_along_axis(probs, indices, axis=1)
                for slot, predictions in zip(slots, top_k(zip(scores.tolist(), indices.tolist()), self.classes)):
                    results[slot].predictions = predictions
            yield from results


def batches(images: Sequence[np.ndarray] | np.ndarray, size: int, fixed: bool
            ) -> Iterator[tuple[np.ndarray, int]]:
    """``images`` stacked ``size`` at a time, each batch with its count of real images. ``fixed``: every
    batch has ``size`` images (a model exported with ``--batch N``), the last filled up by repeats."""
    for start in range(0, len(images), size):
        chunk = list(images[start:start + size])
        real = len(chunk)
        if fixed:
            chunk += [images[i % len(images)] for i in range(size - real)]
        yield np.stack(chunk), real


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, as float32 scores like the torch path's (NaN stays NaN, for the caller to refuse)."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    return (exps / exps.sum(axis=1, keepdims=True)).astype(np.float32)


def refuse_options(path: str | Path, device: str, given: dict[str, object]) -> None:
    """One line (exit 2) for an option an ``.onnx`` model cannot honour: a GPU, or a part that needs torch.

    ``given``: each option's name and value; a truthy value is refused.
    """
    if device not in ("auto", "cpu"):
        raise CncnnError(f"--device {device}: {shown(path)} runs on the CPU through onnxruntime; leave --device "
                         f"out, or give the .safetensors checkpoint to run on {device}")
    for name, value in given.items():
        if value:
            raise CncnnError(f"{name} applies to .safetensors checkpoints, not to the exported {shown(path)}; "
                             f"leave {name} out or give the .safetensors checkpoint")
