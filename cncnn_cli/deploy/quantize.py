"""int8 static quantization of an exported model with onnxruntime, and how far it moved the answers.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op, which onnxruntime fuses
into int8 kernels: VNNI where the CPU has it), weights int8 per output channel, activations uint8
with ranges measured on calibration images. The calibration method sets those ranges: ``minmax``
(the observed extremes), ``entropy`` (KL-divergence histograms) or ``percentile`` (99.999 %).
On the demo they gave the same top-1 within a quarter point and minmax is the fastest to run, so
it is the default (docs/deployment.md has the figures).
"""
from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cncnn_cli.deploy.onnx_runtime import OnnxModel, batches, import_onnxruntime, softmax
from cncnn_cli.errors import CncnnError, first_line

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: Images per calibration batch: onnxruntime collects ranges batch by batch.
CALIBRATION_BATCH = 16


@dataclass
class Agreement:
    """How the int8 model's answers compare with the fp32 model's on ``images`` images."""

    images: int
    #: Percentage of images whose top-1 class is the same.
    top1: float
    #: Largest |Δ| of any softmax probability.
    max_delta: float


def check_method(method: str) -> str:
    if method.lower() not in METHODS:
        raise CncnnError(f"--calibration-method {method}: expected one of {', '.join(METHODS)}")
    return method.lower()


def quantize_int8(fp32: Path, out: Path, calibration: Sequence[np.ndarray], method: str = "minmax",
                  batch: int | None = None) -> None:
    """Write the int8 model of ``fp32`` to ``out``; activation ranges from ``calibration`` (uint8 3×H×W each).

    ``batch``: the model's fixed batch size (``None``: dynamic), which every calibration batch must have.

    The model is first put through onnxruntime's ``quant_pre_process`` (shape inference and graph
    optimization), as its documentation advises before static quantization.
    """
    import_onnxruntime()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = batches(calibration, batch or CALIBRATION_BATCH, fixed=batch is not None)

        def get_next(self) -> dict | None:
            stacked, _ = next(self.batches, (None, 0))
            return None if stacked is None else {"images": stacked}

    with tempfile.TemporaryDirectory(prefix="cncnn-quantize-") as folder, _quiet():
        prepared = Path(folder) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, METHODS[check_method(method)]))
        except Exception as exc:  # noqa: BLE001 - the quantizer fails in many ways; one line for people
            raise CncnnError(f"int8 quantization failed ({type(exc).__name__}: {first_line(exc)})", exit_code=1) \
                from None


def agreement(fp32: Path, int8: Path, images: Sequence[np.ndarray]) -> Agreement:
    """Top-1 agreement and the largest probability difference of the two models on ``images``."""
    models = (OnnxModel(fp32), OnnxModel(int8))
    same, worst = 0, 0.0
    for stacked, _ in batches(images, CALIBRATION_BATCH, fixed=False):
        reference, quantized = (softmax(model.run(stacked)) for model in models)
        same += int((reference.argmax(1) == quantized.argmax(1)).sum())
        worst = max(worst, float(np.abs(reference - quantized).max()))
    return Agreement(len(images), 100.0 * same / max(len(images), 1), worst)


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs a WARNING per 1-D weight it quantizes per tensor instead (BatchNorm1d), and its
    histogram calibrators print their settings on stdout, which is the command's: neither is news."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
