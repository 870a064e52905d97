"""The ConvLSTM's fast paths are as exact as the authors' formulation in fp32, bf16 and fp16, on any CPU.

Every error is max |x − fp64| / max |fp64| per tensor (outputs, gradients, BatchNorm buffers),
the fp64 result computed in the same run, and a fast path passes if it is within 2× of the
authors' formulation's own error at the same precision (:mod:`tests.helpers.numerics`): the bound
moves with the processor's kernels (oneDNN, MKL, AVX2 or AVX-512), so no figure measured on one
machine is written here. ``tools/gpu_check.py`` applies the same rule on the GPU.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cncnn_cli.models.ops import scatter_phases, upsampled_conv
from cncnn_plugins.fusions import ConvLSTMFusion
from cncnn_plugins.official_formulation import OfficialConvLSTMFusion
from tests.helpers.numerics import assert_as_exact_as, assert_worst_at_most

pytestmark = pytest.mark.numerics

LOW = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _projection_grads(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Gradients of a fixed random projection of ``outputs``, taken in fp64 so the loss adds no rounding."""
    gen = torch.Generator().manual_seed(1)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


# ------------------------------------------------------------------ the kernels at full size
def _upsampled_conv_run(leaves: list[torch.Tensor], scale: tuple[int, int], dtype: torch.dtype,
                        official: bool) -> list[torch.Tensor]:
    """Output and gradients of ``conv(up(x)) + base`` in ``dtype``: the phase kernels, or the authors' way."""
    x, weight, bias, base = (t.detach().to(dtype).requires_grad_() for t in leaves)
    if official:
        out = F.conv2d(F.interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, padding=1) + base
    else:
        out = scatter_phases(upsampled_conv(x, weight, bias, scale), scale, x.shape[-2:], 3, base=base.clone())
    return [out, *_projection_grads([out], [x, weight, bias, base])]


@pytest.mark.parametrize("source", [28, 14])  # ×2 (P4 → 56) and ×4 (P5 → 56)
def test_phase_kernels_at_full_size_are_as_exact_as_the_upsampled_convolution(source):
    """C = 256 input channels onto the 56×56 grid, as the full model's conv_x (channels_last, as trained).

    A sample of 64 of conv_x's 4C output channels: each is an independent sum over the same inputs,
    so the sample has the full layer's error distribution at a sixteenth of the CPU time.
    """
    gen = torch.Generator().manual_seed(0)
    channels, outputs, size = 256, 64, 56
    scale = (size // source, size // source)
    leaves = [torch.randn(1, channels, source, source, generator=gen, dtype=torch.float64),
              torch.randn(outputs, channels, 3, 3, generator=gen, dtype=torch.float64) / (3 * channels ** 0.5),
              torch.randn(outputs, generator=gen, dtype=torch.float64),
              torch.randn(1, outputs, size, size, generator=gen, dtype=torch.float64)]
    leaves[0], leaves[3] = (t.contiguous(memory_format=torch.channels_last) for t in (leaves[0], leaves[3]))
    reference = _upsampled_conv_run(leaves, scale, torch.float64, official=True)
    torch.testing.assert_close(_upsampled_conv_run(leaves, scale, torch.float64, official=False), reference,
                               rtol=1e-12, atol=1e-12 * max(r.abs().max().item() for r in reference))
    names = ["output", "grad x", "grad weight", "grad bias", "grad base"]
    for precision, dtype in LOW.items():
        assert_as_exact_as(_upsampled_conv_run(leaves, scale, dtype, official=False),
                           _upsampled_conv_run(leaves, scale, dtype, official=True), reference, dtype,
                           f"x{scale[0]} {precision}", names)


# ------------------------------------------------------------------ the fusion at the GPU check's dry-run size
#: tools/gpu_check.py's dry run: in_channels, C, S3/S4/S5 sizes. Batch 8: FPA's pooled branch normalizes
#: one value per image, and at batch 2 its BatchNorm gradient is almost all cancellation (rounding noise).
DRY_IN, DRY_C, DRY_SPATIAL, BATCH = (16, 32, 64), 8, (8, 4, 2), 8


def _fusion_run(model: torch.nn.Module, feats: list[torch.Tensor], amp: torch.dtype | None) -> list[torch.Tensor]:
    """Outputs, parameter and input gradients and BatchNorm buffers after one training forward."""
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        out = model(feats)
    grads = _projection_grads(list(out), [*model.parameters(), *feats])
    return [*out, *grads, *(b for b in model.buffers() if b.is_floating_point())]


def _fusion_pair(impl: str, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    fast = ConvLSTMFusion(DRY_IN, DRY_C, impl=impl)
    official = OfficialConvLSTMFusion(DRY_IN, DRY_C)
    official.load_state_dict(fast.state_dict())
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(BATCH, c, s, s, generator=gen, dtype=torch.float64).to(dtype)
             for c, s in zip(DRY_IN, DRY_SPATIAL)]
    if dtype != torch.float64:  # training's layout
        fast, official = (m.to(memory_format=torch.channels_last) for m in (fast, official))
        feats = [x.contiguous(memory_format=torch.channels_last) for x in feats]
    return fast.to(dtype), official.to(dtype), [x.requires_grad_() for x in feats]


@pytest.mark.parametrize("impl", ["phase", "conv"])
def test_fusion_fast_paths_are_as_exact_as_the_authors_formulation_under_autocast(impl):
    fast, official, feats = _fusion_pair(impl, torch.float64)
    reference = _fusion_run(official, feats, None)
    names = ["F3", "F4", "F5", *(f"grad {n}" for n, _ in fast.named_parameters()), "grad S3", "grad S4", "grad S5",
             *(n for n, b in fast.named_buffers() if b.is_floating_point())]
    for precision, dtype in LOW.items():
        fast, official, feats = _fusion_pair(impl, torch.float32)
        amp = None if dtype == torch.float32 else dtype
        fast_run, official_run = _fusion_run(fast, feats, amp), _fusion_run(official, feats, amp)
        assert_as_exact_as(fast_run, official_run, reference, dtype, f"{impl} {precision}", names)
        if impl == "phase" and dtype == torch.float16:
            # phase sums the gate pre-activation in fp32 and rounds it once, as the authors' one
            # convolution over [x, h] does: its worst fp16 error is theirs or less.
            assert_worst_at_most(fast_run, official_run, reference, dtype, f"{impl} {precision}")
