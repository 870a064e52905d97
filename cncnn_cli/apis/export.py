"""Export a checkpoint to a file that runs without cncnn: ONNX, or a ``torch.export`` program (.pt2).

The graph takes what any loader has — ``images``, uint8 RGB N×3×H×W at the checkpoint's crop
size, already resized and center-cropped — normalizes inside, and returns ``logits``, the
ensemble of the classifiers (N×K). Class names, preprocessing, the cncnn version and the
source checkpoint travel with it: in the ONNX ``metadata_props`` (each value a JSON document),
in a sidecar ``OUT.json`` beside a ``.pt2``.

Parts whose formulation an ``impl`` switch chooses (the ConvLSTM) are exported with
``impl='plain'``, their formula as written. The fast kernels are custom autograd Functions
writing into ``torch.empty`` buffers from Python loops
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
import tempfile
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
from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.data.images import IMAGE_SUFFIXES, ImageReadError, find_images, load_rgb
from cncnn_cli.data.transforms import build_transform, size_pair
from cncnn_cli.deploy.onnx_runtime import INSTALL_HINT
from cncnn_cli.deploy.quantize import agreement, check_method, quantize_int8
from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.evaluation.evaluate import _dataset_config
from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.utils.console import say
from cncnn_cli.weights.checkpoint import Checkpoint, load_model

FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
#: Largest accepted |Δ| between the exported file's softmax probabilities and cncnn's own.
TOLERANCE = 1e-4
#: Batch sizes a dynamic-batch export is verified at (1 and more than the traced example's 2).
VERIFY_BATCHES = (1, 3)
#: The batch the graph is traced with when the batch is dynamic: torch.export specializes a size-1 dim.
TRACE_BATCH = 2
#: ``--calibration-images``: enough for stable activation ranges (onnxruntime's examples use 100 to 500).
CALIBRATION_IMAGES = 256
#: ``--min-agreement``: the least top-1 agreement (%) of an int8 model with its fp32 graph.
MIN_AGREEMENT = 99.0


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
    #: With ``int8``: how it was quantized and, verified, how far it is from the fp32 graph (the
    #: ``quantization`` entry of the file's metadata).
    quantization: dict | None = None

    @property
    def max_delta(self) -> float | None:
        return max(self.deltas.values()) if self.deltas else None


@dataclass
class Int8Options:
    """``--quantize int8``: where the calibration images come from, how many, and what the result must reach.

    ``calibration``: image files or folders; else ``dataset`` (and ``data_root``): evenly spread images
    of its train split, the verification then on as many of its test split.
    """

    calibration: list[Path] = field(default_factory=list)
    dataset: str | None = None
    data_root: str | None = None
    images: int = CALIBRATION_IMAGES
    method: str = "minmax"
    #: The least top-1 agreement with the fp32 model, in percent, below which nothing is written.
    min_agreement: float = MIN_AGREEMENT

    def check(self, fmt: str) -> None:
        """One line, exit 2, for options that cannot work, before anything is loaded."""
        if fmt != "onnx":
            raise CncnnError("--quantize int8 applies to ONNX exports only; name OUT .onnx")
        check_method(self.method)
        if not self.calibration and not self.dataset:
            raise CncnnError("--quantize int8 needs calibration images: --calibration DIR (images like the ones the "
                             "model will see) or --dataset NAME [--data-root DIR] (its training images)")
        if self.calibration and self.dataset:
            raise CncnnError("give either --calibration or --dataset for the calibration images, not both")
        if self.images < 1:
            raise CncnnError(f"--calibration-images must be at least 1, not {self.images}")
        if not 0 <= self.min_agreement <= 100:
            raise CncnnError(f"--min-agreement is a percentage from 0 to 100, not {self.min_agreement}")


class ExportGraph(nn.Module):
    """uint8 images → ensemble logits: the model's own normalization, then its plain inference path.

    Holds a copy of the model with every ``impl`` switch at ``plain``, so the caller's model keeps
    its fast kernels. A calibrated checkpoint's ``temperature`` divides the logits inside the graph.
    """

    def __init__(self, model: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.model = copy.deepcopy(model).eval()
        for module in self.model.modules():
            if isinstance(getattr(module, "impl", None), str):
                module.impl = "plain"
        preprocessor = model.data_preprocessor
        self.register_buffer("mean", preprocessor.mean.detach().clone())
        self.register_buffer("std", preprocessor.std.detach().clone())
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images.float() - self.mean) / self.std, mode="tensor")["logits"] / self.temperature


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str | None = None, batch: int | None = None,
                      opset: int | None = None, verify: bool = True,
                      images: Sequence[str | Path] | None = None, int8: Int8Options | None = None) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (format from ``fmt`` or the suffix); ``batch=None`` is a dynamic batch.

    ``int8``: quantize the ONNX graph (:func:`write_int8`). Everything that can be checked is
    checked before anything is written (format, packages, checkpoint, images, calibration images).
    The file is serialized in memory, written beside ``out`` and renamed over it only once it is
    complete and, with ``verify``, within :data:`TOLERANCE` of cncnn's forward (an int8 file: at
    ``int8.min_agreement`` with its fp32 graph); otherwise nothing is left behind and a
    :class:`CncnnError` (exit 1) gives the figures, or the reason the disk refused the file (a full
    disk, say).
    """
    out = Path(out)
    fmt = resolve_format(out, fmt)
    if opset is not None and fmt != "onnx":
        raise CncnnError("--opset applies to ONNX exports only")
    if int8 is not None:
        int8.check(fmt)
    require_packages(fmt, verify or int8 is not None)
    model, info = load_model(checkpoint)
    samples = verification_images(images, info) if verify else []
    if int8 is not None:
        calibration, checks, source = calibration_images(Path(checkpoint), info, int8)
        if images:  # the user's own verification images come first
            checks, source = [sample.numpy() for sample in samples], "the --images"
    graph = ExportGraph(model, info.temperature or 1.0)
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
            quantization = None
            if int8 is not None:
                quantization = write_int8(tmp, int8, calibration, (checks, source) if verify else None, batch)
            sidecar = write_sidecar(out, metadata) if fmt == "pt2" else None
            size = _fsync(tmp)
        except OSError:
            raise  # atomic_write removes tmp and gives the one-line error (a full disk, say)
        except BaseException:
            tmp.unlink(missing_ok=True)  # atomic_write only cleans up after OSError
            raise
    shape = ("N" if batch is None else batch, 3, height, width)
    return ExportResult(out, fmt, size, seconds, shape, len(info.classes), deltas, sidecar, quantization)


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
        "output": {"name": "logits", "note": "ensemble (mean) of the classifiers' logits, divided by the "
                                             "temperature; softmax for scores"},
        "temperature": info.temperature or 1.0,
        "dataset": info.dataset,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def calibration_images(checkpoint: Path, info: Checkpoint, int8: Int8Options
                       ) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Calibration images, verification images and where the latter come from: uint8 3×H×W arrays
    through the checkpoint's eval transform. Unreadable files are skipped; none readable is one line."""
    transform = build_transform(info.preprocess, train=False)
    if int8.calibration:
        files = _spread([file for path in int8.calibration for file in find_images(path)], int8.images)
        pixels = []
        for file in files:
            try:
                pixels.append(transform(load_rgb(file)).numpy())
            except ImageReadError:
                continue
        if not pixels:
            raise CncnnError(f"--calibration {', '.join(map(str, int8.calibration))}: no readable image (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)}, in subfolders too); give images like the ones the model "
                             f"will classify")
        if len(pixels) < len(files):
            say(f"calibration: skipped {len(files) - len(pixels)} unreadable image(s) of {len(files)}")
        return pixels, pixels, "the calibration images"
    config = _dataset_config(checkpoint, dict(info.dataset or {}), int8.dataset, int8.data_root)
    options = dict(config)
    kind, root = options.pop("type"), options.pop("data_root")
    splits = [build_dataset(kind, root, split, transform, **options) for split in ("train", "test")]
    train, test = ([sample["inputs"].numpy() for index in _spread(range(len(data)), int8.images)
                    if (sample := data[index]) is not None] for data in splits)
    if not train:
        raise CncnnError(f"--dataset {kind}: no readable image in its train split to calibrate on")
    return train, test or train, "its test split" if test else "the calibration images"


def _spread(items: Sequence, count: int) -> list:
    """``count`` items evenly spread over ``items`` (all of them when there are fewer): every class of a
    sorted listing, deterministically."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def write_int8(path: Path, int8: Int8Options, calibration: list[np.ndarray],
               checks: tuple[list[np.ndarray], str] | None, batch: int | None = None) -> dict:
    """Replace the fp32 ONNX file at ``path`` by its int8 quantization (:mod:`cncnn_cli.deploy.quantize`).

    With ``checks`` (verification images and where they come from), the top-1 agreement with the
    fp32 model and the largest probability difference are measured first, and below
    ``int8.min_agreement`` a :class:`CncnnError` (exit 1) gives them and nothing is written.
    Returns the ``quantization`` metadata entry the file gets.
    """
    import onnx

    say(f"quantizing to int8 ({int8.method} calibration on {len(calibration)} images)")
    entry: dict = {"type": "int8", "format": "QDQ", "weights": "int8, per channel", "activations": "uint8",
                   "calibration_method": int8.method, "calibration_images": len(calibration)}
    with tempfile.TemporaryDirectory(prefix="cncnn-int8-") as folder:
        quantized = Path(folder) / "int8.onnx"
        quantize_int8(path, quantized, calibration, int8.method, batch)
        if checks is not None:
            images, source = checks
            measured = agreement(path, quantized, images)
            say(f"verify int8: top-1 agreement with fp32 {measured.top1:.2f}% on {measured.images} images "
                f"({source}), max |Δ probability| {measured.max_delta:.3f}")
            entry.update(verified_on=source, verify_images=measured.images, top1_agreement=measured.top1,
                         max_delta=measured.max_delta, min_agreement=int8.min_agreement)
            if measured.top1 < int8.min_agreement:
                raise CncnnError(f"the int8 model's top-1 agrees with the fp32 model's on {measured.top1:.2f}% of "
                                 f"{measured.images} images ({source}), below --min-agreement "
                                 f"{int8.min_agreement:g}%; nothing was written (try more or more typical calibration "
                                 f"images, another --calibration-method, or a lower --min-agreement)", exit_code=1)
        model = onnx.load(str(quantized))
    model.metadata_props.add(key="quantization", value=json.dumps(entry))
    write_bytes(path, model.SerializeToString())
    return entry


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
        expected = torch.softmax(predictor.forward(batch)["logits"].float() / predictor.temperature, 1)
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
