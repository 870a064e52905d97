"""Mixed precision for every device through mmengine optimizer wrappers.

mmengine's ``AmpOptimWrapper`` asserts a GPU; on CPU, bf16 autocast needs no loss
scaler (bf16 has fp32's exponent range), so a plain ``OptimWrapper`` whose
``optim_context`` adds ``torch.autocast('cpu', bfloat16)`` is enough.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module(name="CpuBf16OptimWrapper")
class CpuBf16OptimWrapper(OptimWrapper):
    """OptimWrapper running forward passes under CPU bf16 autocast; parameters stay fp32."""

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast("cpu", dtype=torch.bfloat16):
            yield


def amp_wrapper_config(device: torch.device) -> dict:
    """The optimizer-wrapper type (and dtype) for ``--amp`` on ``device``."""
    if device.type == "cpu":
        return {"type": "CpuBf16OptimWrapper"}
    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return {"type": "AmpOptimWrapper", "dtype": dtype, "loss_scale": "dynamic"}
