"""Export a checkpoint to a file that runs without cncnn: ONNX, or a ``torch.export`` program (.pt2).

The graph takes what any loader has — ``images``, uint8 RGB N×3×H×W at the checkpoint's crop
size, already resized and center-cropped — normalizes inside, and returns ``logits``, the
ensemble of the classifiers (N×K). Class names, preprocessing, the cncnn version and the
source checkpoint travel with it: in the ONNX ``metadata_props`` (each value a JSON document),
in a sidecar ``OUT.json`` beside a ``.pt2``.

Parts with a ``fast`` switch (the ConvLSTM) are exported with their plain formula. The fast
kernels are custom autograd Functions writing into ``torch.empty`` buffers from Python loops
over cached phase matrices; the exporter traces them without complaint into a graph that
computes wrong numbers (NaN at batch 1). The plain formula gives the same numbers in ops
every runtime knows, and verification compares the file against cncnn's own (fast) forward.

    from cncnn_cli.apis.export import export_checkpoint
    result = export_checkpoint("work_dirs/cub/best.safetensors", "cub.onnx")
    print(result.path, result.max_delta)
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cncnn_cli import __version__
from cncnn_cli.apis.inference import Predictor
from cncnn_cli.data.images import find_images, load_rgb
from cncnn_cli.data.transforms import build_transform, size_pair
from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.utils.console import say
from cncnn_cli.weights.checkpoint import Checkpoint, load_model

FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
INSTALL_HINT = 'pip install "cncnn[export]"'
#: Largest accepted |Δ| between the exported file's softmax probabilities and cncnn's own.
TOLERANCE = 1e-4
#: Batch sizes a dynamic-batch export is verified at (1 and more than the traced example's 2).
VERIFY_BATCHES = (1, 3)
#: The batch the graph is traced with when the batch is dynamic: torch.export specializes a size-1 dim.
TRACE_BATCH = 2


@dataclass
class ExportResult:
    """What was written and how close it is to cncnn's forward (``deltas``: batch size → max |Δp|)."""

    path: Path
    format: str
    size_bytes: int
    seconds: float
    input_shape: tuple[str | int, ...]
    num_classes: int
    deltas: dict[int, float] = field(default_factory=dict)
    sidecar: Path | None = None

    @property
    def max_delta(self) -> float | None:
        return max(self.deltas.values()) if self.deltas else None


class ExportGraph(nn.Module):
    """uint8 images → ensemble logits: the model's own normalization, then its plain inference path.

    Holds a copy of the model with every ``fast`` switch off, so the caller's model keeps its
    fast kernels.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        for module in self.model.modules():
            if isinstance(getattr(module, "fast", None), bool):
                module.fast = False
        preprocessor = model.data_preprocessor
        self.register_buffer("mean", preprocessor.mean.detach().clone())
        self.register_buffer("std", preprocessor.std.detach().clone())
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images.float() - self.mean) / self.std, mode="tensor")["logits"]


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str | None = None, batch: int | None = None,
                      opset: int | None = None, verify: bool = True,
                      images: Sequence[str | Path] | None = None) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (format from ``fmt`` or the suffix); ``batch=None`` is a dynamic batch.

    Everything that can be checked is checked before anything is written (format, packages,
    checkpoint, images). The file is serialized in memory, written beside ``out`` and renamed
    over it only once it is complete and, with ``verify``, within :data:`TOLERANCE` of cncnn's
    forward; otherwise nothing is left behind and a :class:`CncnnError` (exit 1) gives the
    figures, or the reason the disk refused the file (a full disk, say).
    """
    out = Path(out)
    fmt = resolve_format(out, fmt)
    if opset is not None and fmt != "onnx":
        raise CncnnError("--opset applies to ONNX exports only")
    require_packages(fmt, verify)
    model, info = load_model(checkpoint)
    samples = verification_images(images, info) if verify else []
    graph = ExportGraph(model)
    metadata = export_metadata(info, Path(checkpoint))
    height, width = _crop(info)
    with atomic_write(out) as tmp:
        try:
            started = time.perf_counter()
            say(f"exporting {checkpoint} to {fmt.upper()} ({'dynamic' if batch is None else batch} batch)")
            if fmt == "onnx":
                write_onnx(graph, tmp, (height, width), batch, opset, metadata)
            else:
                write_pt2(graph, tmp, (height, width), batch)
            seconds = time.perf_counter() - started
            deltas = {}
            if verify:
                deltas = verify_export(tmp, fmt, Predictor(model, info, device="cpu"), samples,
                                       VERIFY_BATCHES if batch is None else (batch,))
            sidecar = write_sidecar(out, metadata) if fmt == "pt2" else None
            size = _fsync(tmp)
        except OSError:
            raise  # atomic_write removes tmp and gives the one-line error (a full disk, say)
        except BaseException:
            tmp.unlink(missing_ok=True)  # atomic_write only cleans up after OSError
            raise
    shape = ("N" if batch is None else batch, 3, height, width)
    return ExportResult(out, fmt, size, seconds, shape, len(info.classes), deltas, sidecar)


def resolve_format(out: Path, fmt: str | None) -> str:
    """``onnx`` or ``pt2``: as given, else from OUT's suffix."""
    if fmt is None:
        if out.suffix.lower() not in FORMATS:
            raise CncnnError(f"{out}: cannot tell the format from the suffix; name it .onnx or .pt2, or pass --format")
        return FORMATS[out.suffix.lower()]
    if fmt.lower() not in FORMATS.values():
        raise CncnnError(f"--format must be onnx or pt2, not {fmt!r}")
    return fmt.lower()


def require_packages(fmt: str, verify: bool) -> None:
    """Fail with the install hint (exit 2) before any work when an ONNX package is missing."""
    if fmt != "onnx":
        return
    for name in ("onnx", "onnxscript", *(("onnxruntime",) if verify else ())):
        try:
            importlib.import_module(name)
        except ImportError:
            raise CncnnError(f"ONNX export needs the {name} package, which is not installed: {INSTALL_HINT}") \
                from None


def export_metadata(info: Checkpoint, source: Path) -> dict[str, str]:
    """Everything a runtime needs beside the graph, each value a JSON document."""
    preprocess = {key: info.preprocess[key] for key in ("resize", "crop", "mean", "std")}
    values = {
        "classes": info.classes,
        "preprocess": preprocess,
        "cncnn_version": __version__,
        "source_checkpoint": {"name": source.name, "sha256": _sha256(source)},
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "channels": "RGB",
                  "note": "resized and center-cropped; normalization is inside the graph"},
        "output": {"name": "logits", "note": "ensemble (mean) of the classifiers' logits; softmax for scores"},
    }
    return {key: json.dumps(value) for key, value in values.items()}


def write_onnx(graph: ExportGraph, path: Path, size: tuple[int, int], batch: int | None, opset: int | None,
               metadata: dict[str, str]) -> None:
    """The dynamo exporter, the weights inside the one file, the metadata in ``metadata_props``."""
    example, dynamic = _example(size, batch)
    try:
        with torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes=dynamic, opset_version=opset,
                                        verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways; one line for people
        raise CncnnError(f"ONNX export failed ({type(exc).__name__}: {first_line(exc)})", exit_code=1) from None
    program.model.metadata_props.update(metadata)
    # Serialized in memory, then written: a failed write is a plain OSError, never a half-written model.
    try:
        data = program.model_proto.SerializeToString()
    except ValueError as exc:  # protobuf's 2 GiB limit on one message
        raise CncnnError(f"ONNX export failed: the model does not fit in one .onnx file ({first_line(exc)}); "
                         f"export to .pt2 instead", exit_code=1) from None
    write_bytes(path, data)


def write_pt2(graph: ExportGraph, path: Path, size: tuple[int, int], batch: int | None) -> None:
    """``torch.export.export`` then ``torch.export.save``: one file, loadable without cncnn."""
    example, dynamic = _example(size, batch)
    try:
        with torch.no_grad():
            program = torch.export.export(graph, (example,), dynamic_shapes=dynamic)
    except Exception as exc:  # noqa: BLE001 - as in write_onnx
        raise CncnnError(f"torch.export failed ({type(exc).__name__}: {first_line(exc)})", exit_code=1) from None
    # Into memory first: torch's zip writer, writing to a file that fails (a full disk), throws from
    # a C++ destructor and aborts the process. A buffer cannot fail; the file write then can, cleanly.
    # getvalue(), not getbuffer(): a memoryview of a BytesIO caught in the traceback of a failed write
    # crashes the garbage collector of CPython 3.12.0-3.12.1 (python/cpython#111049).
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    write_bytes(path, buffer.getvalue())


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    """``data`` into ``path``, flushed to disk; an OSError (ENOSPC, ...) propagates for the caller to word."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_sidecar(out: Path, metadata: dict[str, str]) -> Path:
    """``OUT.json``: the ONNX metadata for a ``.pt2``, as one JSON object."""
    sidecar = out.with_name(out.name + ".json")
    with atomic_write(sidecar) as tmp:  # a refused write is one line from atomic_write
        tmp.write_text(json.dumps({key: json.loads(value) for key, value in metadata.items()}, indent=2) + "\n")
    return sidecar


def verification_images(paths: Sequence[str | Path] | None, info: Checkpoint) -> list[torch.Tensor]:
    """uint8 3×H×W tensors through the checkpoint's eval transform: the user's images, else synthetic ones."""
    if paths:
        files = [image for path in paths for image in find_images(path)]
        if not files:
            raise CncnnError("--images: no image files found")
        pictures = [load_rgb(file) for file in files]
    else:
        pictures = synthetic_images()
    transform = build_transform(info.preprocess, train=False)
    return [transform(picture) for picture in pictures]


def synthetic_images(count: int = 3, seed: int = 0) -> list[Image.Image]:
    """Deterministic RGB pictures (smooth gradients plus noise) of assorted sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    pictures = []
    for index in range(count):
        height, width = 96 + 40 * index, 128 - 16 * index
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
        noise = rng.normal(0, 40, (height, width, 3))
        pixels = np.clip(ramp + noise + rng.uniform(0, 80), 0, 255).astype(np.uint8)
        pictures.append(Image.fromarray(pixels, mode="RGB"))
    return pictures


def verify_export(path: Path, fmt: str, predictor: Predictor, samples: list[torch.Tensor],
                  batches: Sequence[int]) -> dict[int, float]:
    """Max |Δ| of softmax probabilities, file vs cncnn's forward, per batch size; exit 1 above tolerance."""
    run = _onnx_runner(path) if fmt == "onnx" else _pt2_runner(path)
    deltas = {}
    for size in batches:
        batch = torch.stack([samples[i % len(samples)] for i in range(size)])
        expected = torch.softmax(predictor.forward(batch)["logits"].float(), 1)
        got = torch.softmax(torch.as_tensor(run(batch)).float(), 1)
        deltas[size] = float((got - expected).abs().max())
        say(f"verify: batch {size}: max |Δ probability| = {deltas[size]:.2e}")
    worst = max(deltas.values())
    if not worst <= TOLERANCE:  # NaN fails too
        raise CncnnError(f"the exported model differs from cncnn's forward: max |Δ probability| {worst:.2e} > "
                         f"{TOLERANCE:.0e}; nothing was written (--no-verify writes it anyway)", exit_code=1)
    return deltas


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["logits"], {"images": batch.numpy()})[0]


def _pt2_runner(path: Path):
    with open(path, "rb") as handle:
        module = torch.export.load(handle).module()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(batch)

    return run


def _example(size: tuple[int, int], batch: int | None) -> tuple[torch.Tensor, dict | None]:
    """The traced input and, for a dynamic batch, its ``dynamic_shapes``."""
    example = torch.zeros(batch or TRACE_BATCH, 3, *size, dtype=torch.uint8)
    if batch is not None:
        return example, None
    return example, {"images": {0: torch.export.Dim("batch", min=1)}}


def _crop(info: Checkpoint) -> tuple[int, int]:
    return size_pair(info.preprocess["crop"])


def _fsync(path: Path) -> int:
    """Flush ``path`` to disk before the rename makes it visible; its size in bytes."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    return path.stat().st_size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
