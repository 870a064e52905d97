"""fp32 matmul precision (TF32) and memory layout: one policy for training and ``cncnn benchmark``.

On CUDA, fp32 matrix multiplications and convolutions run in TF32 by default (``high``): the
tensor cores do them several times faster, with a 10-bit mantissa on inputs and fp32
accumulation, which training does not notice. ``highest`` keeps them in full fp32 (for exact
comparisons, or to rule TF32 out when a run diverges). A CPU has no TF32: there the setting
is left alone and fp32 stays fp32.
"""
from __future__ import annotations

import torch

from cncnn_cli.errors import CncnnError

#: ``fp32_precision`` values: ``high`` lets CUDA use TF32, ``highest`` keeps full fp32.
FP32_PRECISIONS = ("high", "highest")
DEFAULT_FP32_PRECISION = "high"


def apply_fp32_precision(device: torch.device, precision: str = DEFAULT_FP32_PRECISION) -> dict:
    """Set the fp32 matmul/convolution precision for ``device``; returns what is in effect.

    ``{"fp32_matmul_precision": "high"|"highest", "tf32": bool}``. Process-wide (torch's settings
    are global), so every run sets it again rather than inheriting a previous run's choice.
    """
    if precision not in FP32_PRECISIONS:
        raise CncnnError(f"fp32 precision {precision!r}: expected {' or '.join(FP32_PRECISIONS)}")
    if device.type != "cuda":
        return {"fp32_matmul_precision": "highest", "tf32": False}
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = precision == "high"
    return {"fp32_matmul_precision": precision, "tf32": precision == "high"}


def describe_fp32_precision(setting: dict) -> str:
    """The one line a run prints about it."""
    if setting["tf32"]:
        return "fp32 matmuls and convolutions: TF32 (fp32_precision=high; --fp32-precision highest for full fp32)"
    return "fp32 matmuls and convolutions: full fp32"


def uses_channels_last(device: torch.device, amp: bool) -> bool:
    """channels_last helps cuDNN, and oneDNN's bf16 convolution backward is several times slower
    without it (docs/benchmarks.md): on CUDA always, on CPU with ``--amp``."""
    return device.type == "cuda" or amp
