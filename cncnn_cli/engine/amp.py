"""Mixed precision for every device through mmengine optimizer wrappers.

One decision for training and ``cncnn benchmark``: bf16 where the hardware computes it
natively (every CPU autocasts bf16; a GPU only if it has bf16 units — emulated bf16 is
slower than fp16), else fp16. bf16 has fp32's exponent range, so it needs no loss scaler:
:class:`Bf16OptimWrapper` is a plain ``OptimWrapper`` whose ``optim_context`` adds
``torch.autocast`` (mmengine's ``AmpOptimWrapper`` always creates a ``GradScaler``, whose
``found_inf`` check syncs every step, and asserts a GPU). fp16 uses ``AmpOptimWrapper``
with dynamic loss scaling, which steps the scaler once per optimizer step, accumulation included.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


def autocast_dtype(device: torch.device) -> torch.dtype:
    """``--amp``'s dtype on ``device``: bf16 on CPUs and on GPUs with native bf16, else fp16."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                return torch.float16
    return torch.bfloat16


@OPTIM_WRAPPERS.register_module(name="Bf16OptimWrapper")
class Bf16OptimWrapper(OptimWrapper):
    """OptimWrapper running forward passes under bf16 autocast; parameters stay fp32, no loss scaler."""

    def __init__(self, device_type: str = "cuda", **kwargs) -> None:
        super().__init__(**kwargs)
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast(self.device_type, dtype=torch.bfloat16):
            yield


def amp_wrapper_config(dtype: torch.dtype, device: torch.device) -> dict:
    """The optimizer-wrapper type (and its options) for ``--amp`` in ``dtype`` (:func:`autocast_dtype`)
    on ``device``."""
    if dtype == torch.bfloat16:
        return {"type": "Bf16OptimWrapper", "device_type": device.type}
    return {"type": "AmpOptimWrapper", "dtype": "float16", "loss_scale": "dynamic"}
