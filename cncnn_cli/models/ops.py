"""Exact fast kernels used by the model parts: each computes a plain formula's numbers with less work.

- :func:`upsampled_conv` / :func:`scatter_phases`: a convolution over a nearest-upsampled map,
  computed on the small map. Every output phase (row mod s, column mod s) is a smaller
  convolution with summed taps, and phases that read the same source pixels are computed once.
- :func:`lstm_gates`: the LSTM gate math as one autograd node with a hand-written backward.
- Helpers: :func:`integer_scale`, :func:`memory_format_of`, :func:`autocast_once`,
  :func:`maybe_recompute`.

Under ``torch.compile`` the hand-written autograd Functions are kept out of the graph (Dynamo
cannot trace their ``out=`` writes into views): :func:`upsampled_conv` and
:func:`scatter_phases` run eagerly between compiled regions, and :func:`lstm_gates` takes the
plain formula, which the compiler fuses itself (same numbers).

tests/models/test_speedups.py checks the kernels against the plain formulas, values and gradients.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint as recompute


class PhasePlan(NamedTuple):
    """How a k-tap, padding-k//2 convolution along one ×s nearest-upsampled axis reads the source axis.

    Output index ``s·i + a`` sees source pixels ``i + start(a) … i + start(a) + width - 1``
    with the k taps summed into ``width`` by ``matrices[phase[a]]``; phases with the same
    mapping share one matrix. After padding the source by ``pad``, phase ``a`` of output
    ``s·i + a`` is window ``i + offset[a]``.
    """

    matrices: tuple[tuple[tuple[float, ...], ...], ...]  # distinct phases × width × k
    phase: tuple[int, ...]  # per a in range(s)
    offset: tuple[int, ...]  # per a in range(s)
    width: int
    pad: tuple[int, int]


@cache
def phase_plan(kernel_size: int, scale: int) -> PhasePlan:
    """The :class:`PhasePlan` for a ``kernel_size`` convolution after ×``scale`` nearest upsampling."""
    radius = kernel_size // 2
    sources = [tuple((a + t - radius) // scale for t in range(kernel_size)) for a in range(scale)]
    starts = [min(s) for s in sources]
    width = max(max(s) - min(s) + 1 for s in sources)
    distinct: dict[tuple[int, ...], int] = {}
    matrices = []
    for src, start in zip(sources, starts):
        if src not in distinct:
            distinct[src] = len(matrices)
            matrices.append(tuple(tuple(float(src[t] - start == row) for t in range(kernel_size))
                                  for row in range(width)))
    lo = max(0, -min(starts))
    hi = max(0, max(start + width - 1 for start in starts))
    return PhasePlan(tuple(matrices), tuple(distinct[s] for s in sources), tuple(s + lo for s in starts),
                     width, (lo, hi))


@torch.compiler.disable
def upsampled_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   scale: tuple[int, int], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Phases of ``conv2d(nearest_upsample(x, scale), weight, bias, padding=k//2)``, computed on ``x``.

    Returns a (B, O, Ph, Pw, Lh, Lw) view: output pixel ``(s_h·i + a, s_w·j + b)`` is
    ``[:, :, phase_h[a], phase_w[b], i + offset_h[a], j + offset_w[b]]`` (see
    :func:`scatter_phases`). For a 3×3 kernel, ×2 costs 4/9 and ×4 1/4 of the upsampled
    convolution's multiply-adds. One im2col and one GEMM: oneDNN's convolutions with
    thousands of output channels on tiny maps are slow, bf16 backward especially.

    ``dtype`` (default ``x.dtype``) is the output's: ``accumulation_dtype(x.dtype)`` keeps the
    phases unrounded under fp16/bf16 autocast (exact upcasts of x, the merged taps unrounded, an
    fp32 GEMM), for a caller that adds them to another sum and rounds once
    (:meth:`~cncnn_plugins.fusions.ConvLSTM.fast_step`).
    """
    plan_h, plan_w = phase_plan(weight.shape[-2], scale[0]), phase_plan(weight.shape[-1], scale[1])
    # Every sum outside the GEMM runs in fp32 under fp16/bf16 autocast and is rounded once, as cuDNN
    # accumulates (in fp32 and fp64 the casts are no-ops): the taps merged into a phase's weight
    # (a three-operand einsum in fp16/bf16 rounds its intermediate product too), and in backward the
    # overlapping windows' gradients that im2col's backward folds into x's (the ``.to`` after the
    # fp32 im2col) and the bias's over its phase copies. The GEMM accumulates in fp32 itself (CPU
    # BLAS and cuBLAS alike).
    accumulate = accumulation_dtype(x.dtype)
    patches = F.pad(x.to(accumulate), (*plan_w.pad, *plan_h.pad)).unfold(2, plan_h.width, 1)
    patches = patches.unfold(3, plan_w.width, 1)
    batch, _, rows, cols = patches.shape[:4]  # patches: B, C, Lh, Lw, kh, kw
    mh = _phase_matrices(weight.shape[-2], scale[0], accumulate, weight.device)
    mw = _phase_matrices(weight.shape[-1], scale[1], accumulate, weight.device)
    ph, pw = mh.shape[0], mw.shape[0]
    upcast = dtype is not None and dtype != x.dtype
    with torch.autocast(x.device.type, enabled=False):  # autocast would run the einsum in fp16/bf16
        merged = torch.einsum("pyt,qxr,octr->pqocyx", mh, mw, weight.to(accumulate))
    merged = merged.reshape(ph * pw * weight.shape[0], -1).to(dtype if upcast else weight.dtype)
    bias = None if bias is None else bias.to(accumulate).repeat(ph * pw).to(dtype if upcast else bias.dtype)
    gemm_dtype = dtype if upcast else x.dtype
    # Autocast would cast an upcast GEMM's operands back down.
    with torch.autocast(x.device.type, enabled=False) if upcast else nullcontext():
        # The GEMM's orientation puts channels innermost for channels_last inputs, pixels otherwise,
        # so that scatter_phases copies along the innermost dimension of both sides.
        if memory_format_of(x) == torch.channels_last:
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(batch * rows * cols, -1).to(gemm_dtype)
            out = patches @ merged.t() if bias is None else torch.addmm(bias, patches, merged.t())
            return out.view(batch, rows, cols, ph, pw, -1).permute(0, 5, 3, 4, 1, 2)
        patches = patches.permute(1, 4, 5, 0, 2, 3).reshape(-1, batch * rows * cols).to(gemm_dtype)
        out = merged @ patches if bias is None else torch.addmm(bias[:, None], merged, patches)
        return out.view(ph, pw, -1, batch, rows, cols).permute(3, 2, 0, 1, 4, 5)


@cache
def _phase_matrices(kernel_size: int, scale: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``phase_plan(kernel_size, scale).matrices`` as a tensor, made once (no host→device copy per call).

    Made outside inference mode, so a first call under ``torch.inference_mode`` does not
    cache a tensor that training could not save for backward.
    """
    with torch.inference_mode(False):
        return torch.tensor(phase_plan(kernel_size, scale).matrices, dtype=dtype, device=device)


class _ScatterPhases(torch.autograd.Function):
    """Assemble (or add, in place) a full map from its phases; the backward sums repeated phases."""

    @staticmethod
    def forward(ctx, phases, base, plans, size, memory_format):
        (plan_h, plan_w), (height, width) = plans, size
        batch, channels = phases.shape[:2]
        sh, sw = len(plan_h.phase), len(plan_w.phase)
        out = base if base is not None else torch.empty(
            batch, channels, height * sh, width * sw, dtype=phases.dtype, device=phases.device,
            memory_format=memory_format)
        grid = out.view(batch, channels, height, sh, width, sw)
        for a, (ph, u) in enumerate(zip(plan_h.phase, plan_h.offset)):
            for b, (pw, v) in enumerate(zip(plan_w.phase, plan_w.offset)):
                source = phases[:, :, ph, pw, u:u + height, v:v + width]
                target = grid[:, :, :, a, :, b]
                target.add_(source) if base is not None else target.copy_(source)
        if base is not None:
            ctx.mark_dirty(base)
        ctx.plans, ctx.size, ctx.has_base = plans, size, base is not None
        ctx.phases_layout = torch.empty_like(phases, device="meta")
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (plan_h, plan_w), (height, width) = ctx.plans, ctx.size
        batch, channels = grad.shape[:2]
        grid = grad.reshape(batch, channels, height, len(plan_h.phase), width, len(plan_w.phase))
        # Laid out like the phases (upsampled_conv's GEMM output): its backward needs no copy.
        # Phases shared by several output rows/columns sum their gradients in fp32 under fp16/bf16
        # and round once (no-op casts in fp32 and fp64).
        grad_phases = torch.zeros_like(ctx.phases_layout, device=grad.device,
                                       dtype=accumulation_dtype(grad.dtype))
        for a, (ph, u) in enumerate(zip(plan_h.phase, plan_h.offset)):
            for b, (pw, v) in enumerate(zip(plan_w.phase, plan_w.offset)):
                grad_phases[:, :, ph, pw, u:u + height, v:v + width] += grid[:, :, :, a, :, b]
        return grad_phases.to(grad.dtype), grad if ctx.has_base else None, None, None, None


@torch.compiler.disable
def scatter_phases(phases: torch.Tensor, scale: tuple[int, int], size: tuple[int, int], kernel_size: int,
                   base: torch.Tensor | None = None,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The (B, C, s_h·H, s_w·W) map whose phases :func:`upsampled_conv` returned; added into ``base`` if given.

    ``size`` is the source size (H, W). ``base`` is modified in place (autograd knows).
    """
    plans = (phase_plan(kernel_size, scale[0]), phase_plan(kernel_size, scale[1]))
    return _ScatterPhases.apply(phases, base, plans, tuple(size), memory_format)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are accumulated in for tensors of ``dtype``: fp32 for fp16/bf16, else ``dtype`` itself."""
    return torch.promote_types(dtype, torch.float32)


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """The layout new full-size maps should take to match ``t`` (channels_last models stay so)."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format

class _LSTMGates(torch.autograd.Function):
    """The gate math as one autograd node: forward in 6 passes, backward written out.

    PyTorch's own graph for the formula keeps more temporaries and, in backward, stacks
    the four gate gradients with an extra copy; here they are written straight into the
    gradient of the gate tensor.
    """

    @staticmethod
    def forward(ctx, gates, c):
        blocks = 3 if c is None else 4
        channels = gates.shape[1] // blocks
        sig = torch.sigmoid(gates.narrow(1, 0, (blocks - 1) * channels))
        tanh_g = torch.tanh(gates.narrow(1, (blocks - 1) * channels, channels))
        si, so = sig.narrow(1, 0, channels), sig.narrow(1, (blocks - 2) * channels, channels)
        c_next = si * tanh_g
        if c is not None:
            c_next.addcmul_(sig.narrow(1, channels, channels), c)
        tanh_c = torch.tanh(c_next)
        h = so * tanh_c
        ctx.save_for_backward(sig, tanh_g, tanh_c, c)
        ctx.set_materialize_grads(False)
        ctx.gates_layout = torch.empty_like(gates, device="meta")  # the gradient takes the gates' strides
        return h, c_next

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_c_next):
        sig, tanh_g, tanh_c, c = ctx.saved_tensors
        channels = tanh_g.shape[1]
        blocks = 3 if c is None else 4
        si, so = sig.narrow(1, 0, channels), sig.narrow(1, (blocks - 2) * channels, channels)
        grad = torch.empty_like(ctx.gates_layout, device=sig.device)
        gi, go = grad.narrow(1, 0, channels), grad.narrow(1, (blocks - 2) * channels, channels)
        gg = grad.narrow(1, (blocks - 1) * channels, channels)
        if grad_h is None:
            grad_h = torch.zeros_like(tanh_c)
        # dc = dh·σ(o)·(1 - tanh²c) + dc'
        grad_c = torch.mul(grad_h, so)
        torch.ops.aten.tanh_backward.grad_input(grad_c, tanh_c, grad_input=grad_c)
        if grad_c_next is not None:
            grad_c += grad_c_next
        _sigmoid_grad(torch.mul(grad_h, tanh_c, out=go), so)
        _sigmoid_grad(torch.mul(grad_c, tanh_g, out=gi), si)
        torch.ops.aten.tanh_backward.grad_input(torch.mul(grad_c, si, out=gg), tanh_g, grad_input=gg)
        grad_c_prev = None
        if c is not None:
            sf = sig.narrow(1, channels, channels)
            _sigmoid_grad(torch.mul(grad_c, c, out=grad.narrow(1, channels, channels)), sf)
            if ctx.needs_input_grad[1]:
                grad_c_prev = grad_c.mul_(sf)
        return grad, grad_c_prev


def _sigmoid_grad(grad: torch.Tensor, sig: torch.Tensor) -> None:
    """``grad ← grad·σ·(1 - σ)`` in place."""
    torch.ops.aten.sigmoid_backward.grad_input(grad, sig, grad_input=grad)


def lstm_gates(gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``c' = σ(f)·c + σ(i)·tanh(g)``, ``h' = σ(o)·tanh(c')`` with gates in order i, f, o, g (dim 1).

    ``c = None`` is the zero state: the forget term vanishes, so ``gates`` holds only
    i, o, g (3C channels).
    """
    if torch.compiler.is_compiling():
        return gate_formula(gates, c)
    return _LSTMGates.apply(gates, c)


def gate_formula(gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`lstm_gates` in plain torch ops, for compilers to fuse (and autograd to differentiate)."""
    if c is None:
        i, o, g = gates.chunk(3, 1)
        c_next = torch.sigmoid(i) * torch.tanh(g)
    else:
        i, f, o, g = gates.chunk(4, 1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


def maybe_recompute(enabled: bool, fn: Callable, *args):
    """``fn(*args)``, as a non-reentrant checkpoint (recomputed in backward) when ``enabled`` and training."""
    if enabled and torch.is_grad_enabled():
        return recompute(fn, *args, use_reentrant=False)
    return fn(*args)


def autocast_once(t: torch.Tensor) -> torch.Tensor:
    """``t`` in autocast's dtype when autocast is on: one cast per forward instead of one per use."""
    device = t.device.type
    if torch.is_autocast_enabled(device):
        return t.to(torch.get_autocast_dtype(device))
    return t


def integer_scale(source: torch.Size, size: tuple[int, int]) -> tuple[int, int] | None:
    """(s_h, s_w) when ``size`` is an integer multiple of ``source``, else None."""
    if size[0] % source[0] or size[1] % source[1]:
        return None
    return size[0] // source[0], size[1] // source[1]
