"""HL-pathway fusions: laterals to one width C, then high → low navigation.

``convlstm`` is the paper's HL pathway; ``sum`` is the FPN-style add of Table 2's "HL".
Both take (S3, S4, S5) and return (F3, F4, F5), all C×H3×W3 (S3's size).

The ConvLSTM dominates the model's cost, so it is computed with exact rewrites of the
plain formula (each tested against it, values and gradients, in tests/test_speedups.py):

- laterals at the native size, upsampled last (MODEL.md);
- a convolution over a nearest-upsampled map is computed on the small map: every output
  phase (row mod s, column mod s) is a smaller convolution with summed taps, and phases
  that read the same source pixels are computed once (:func:`upsampled_conv`);
- the zero initial state drops ``conv_h`` and the forget gate of step 1;
- full-resolution steps convolve [x, h] with the whole weight (no slice copies);
- the gate math is one autograd node with a hand-written backward (:func:`lstm_gates`).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint as recompute

from cncnn_cli.registry import FUSIONS
from cncnn_plugins.init import init_new_layers

Maps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ReplicatedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d for a map that is nearest-upsampled ``replication``× in pixel count afterwards.

    Normalizing before or after the upsampling gives the same output (same batch mean
    and biased variance), but the running variance uses the unbiased estimate, whose
    Bessel factor N/(N-1) counts pixels: this layer counts the upsampled ones, so the
    running statistics also equal those of the upsample-first formulation exactly.
    """

    def forward(self, x: torch.Tensor, replication: int = 1) -> torch.Tensor:
        if not self.training or replication == 1 or self.momentum is None:
            return super().forward(x)
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.to(self.running_var.dtype), dim=(0, 2, 3), unbiased=False)
            count = x.numel() // x.shape[1] * replication
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (count / (count - 1)), self.momentum)
            self.num_batches_tracked.add_(1)
        return out

    def to_sync_batchnorm(self) -> "ReplicatedSyncBatchNorm2d":
        """The synchronized form with the same statistics rule (``cncnn --sync-bn`` converts to it)."""
        return ReplicatedSyncBatchNorm2d.from_batchnorm(self)


class ReplicatedSyncBatchNorm2d(nn.SyncBatchNorm):
    """:class:`ReplicatedBatchNorm2d` with statistics over every process (SyncBN).

    ``replication`` copies of the map side by side have the same mean and biased variance and
    ``replication``× the pixel count, so torch's SyncBatchNorm over them keeps the running
    variance of the upsample-first formulation; the output is the first copy. Only this
    layer (P5's, at the smallest resolution) pays the copies.
    """

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "ReplicatedSyncBatchNorm2d":
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            sync.weight, sync.bias = bn.weight, bn.bias
        sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
        sync.num_batches_tracked = bn.num_batches_tracked
        sync.train(bn.training)
        return sync

    def forward(self, x: torch.Tensor, replication: int = 1) -> torch.Tensor:
        if not self.training or replication == 1:
            return super().forward(x)
        return super().forward(x.repeat(1, 1, 1, replication))[..., :x.shape[-1]]


class ConvBNReLU(nn.Module):
    """1×1 conv without bias → BatchNorm2d(eps 1e-5, momentum 0.01) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = ReplicatedBatchNorm2d(out_channels, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor, replication: int = 1) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x), replication), inplace=True)


class FeaturePyramidAttention(nn.Module):
    """``FPA(x) = CBR(x) + CBR(GAP(x))``; the pooled branch broadcasts over H×W.

    ``replication`` is how many pixels of the upsampled output each input pixel becomes.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.master = ConvBNReLU(in_channels, out_channels)
        self.pooled = ConvBNReLU(in_channels, out_channels)

    def forward(self, x: torch.Tensor, replication: int = 1) -> torch.Tensor:
        return self.master(x, replication) + self.pooled(F.adaptive_avg_pool2d(x, 1))


class Laterals(nn.Module):
    """P5 = FPA(S5), P4 = conv1×1(S4), P3 = conv1×1(S3), all C channels at S3's size.

    Exact speed-up (MODEL.md): 1×1 convs, BatchNorm and ReLU commute with nearest
    upsampling by an integer factor — every pixel is copied equally often, so even
    batch statistics are unchanged — so P5 and P4 are computed at their native size
    (:meth:`native`) and upsampled last (16× and 4× less work). Image sizes are
    multiples of 32 so the factors are integers.
    """

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.fpa5 = FeaturePyramidAttention(c5, channels)
        self.lateral4 = nn.Conv2d(c4, channels, 1)
        self.lateral3 = nn.Conv2d(c3, channels, 1)

    def native(self, feats: Maps) -> Maps:
        """(P3, P4, P5) before upsampling, each at its backbone resolution."""
        s3, s4, s5 = feats
        replication = (s3.shape[-2] * s3.shape[-1]) // (s5.shape[-2] * s5.shape[-1])
        return self.lateral3(s3), self.lateral4(s4), self.fpa5(s5, replication)

    def forward(self, feats: Maps) -> Maps:
        p3, p4, p5 = self.native(feats)
        size = p3.shape[-2:]
        return p3, F.interpolate(p4, size=size, mode="nearest"), F.interpolate(p5, size=size, mode="nearest")


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


def upsampled_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   scale: tuple[int, int]) -> torch.Tensor:
    """Phases of ``conv2d(nearest_upsample(x, scale), weight, bias, padding=k//2)``, computed on ``x``.

    Returns a (B, O, Ph, Pw, Lh, Lw) view: output pixel ``(s_h·i + a, s_w·j + b)`` is
    ``[:, :, phase_h[a], phase_w[b], i + offset_h[a], j + offset_w[b]]`` (see
    :func:`scatter_phases`). For a 3×3 kernel, ×2 costs 4/9 and ×4 1/4 of the upsampled
    convolution's multiply-adds. One im2col and one GEMM: oneDNN's convolutions with
    thousands of output channels on tiny maps are slow, bf16 backward especially.
    """
    plan_h, plan_w = phase_plan(weight.shape[-2], scale[0]), phase_plan(weight.shape[-1], scale[1])
    patches = F.pad(x, (*plan_w.pad, *plan_h.pad)).unfold(2, plan_h.width, 1).unfold(3, plan_w.width, 1)
    batch, _, rows, cols = patches.shape[:4]  # patches: B, C, Lh, Lw, kh, kw
    mh = torch.tensor(plan_h.matrices, dtype=weight.dtype, device=weight.device)
    mw = torch.tensor(plan_w.matrices, dtype=weight.dtype, device=weight.device)
    ph, pw = mh.shape[0], mw.shape[0]
    merged = torch.einsum("pyt,qxr,octr->pqocyx", mh, mw, weight).reshape(ph * pw * weight.shape[0], -1)
    bias = None if bias is None else bias.repeat(ph * pw)
    # The GEMM's orientation puts channels innermost for channels_last inputs, pixels otherwise,
    # so that scatter_phases copies along the innermost dimension of both sides.
    if _memory_format(x) == torch.channels_last:
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(batch * rows * cols, -1)
        out = patches @ merged.t() if bias is None else torch.addmm(bias, patches, merged.t())
        return out.view(batch, rows, cols, ph, pw, -1).permute(0, 5, 3, 4, 1, 2)
    patches = patches.permute(1, 4, 5, 0, 2, 3).reshape(-1, batch * rows * cols)
    out = merged @ patches if bias is None else torch.addmm(bias[:, None], merged, patches)
    return out.view(ph, pw, -1, batch, rows, cols).permute(3, 2, 0, 1, 4, 5)


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
        grad_phases = torch.zeros_like(ctx.phases_layout, device=grad.device)
        for a, (ph, u) in enumerate(zip(plan_h.phase, plan_h.offset)):
            for b, (pw, v) in enumerate(zip(plan_w.phase, plan_w.offset)):
                grad_phases[:, :, ph, pw, u:u + height, v:v + width] += grid[:, :, :, a, :, b]
        return grad_phases, grad if ctx.has_base else None, None, None, None


def scatter_phases(phases: torch.Tensor, scale: tuple[int, int], size: tuple[int, int], kernel_size: int,
                   base: torch.Tensor | None = None,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The (B, C, s_h·H, s_w·W) map whose phases :func:`upsampled_conv` returned; added into ``base`` if given.

    ``size`` is the source size (H, W). ``base`` is modified in place (autograd knows).
    """
    plans = (phase_plan(kernel_size, scale[0]), phase_plan(kernel_size, scale[1]))
    return _ScatterPhases.apply(phases, base, plans, tuple(size), memory_format)


def _memory_format(t: torch.Tensor) -> torch.memory_format:
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
    return _LSTMGates.apply(gates, c)


class ConvLSTM(nn.Module):
    """One ConvLSTM layer (3×3, padding 1, bias) run over a short sequence of maps.

    The parameters are the paper's single convolution over [x, h] with 4C outputs in
    gate order i, f, o, g. ``forward(sequence, size)`` computes exactly the ConvLSTM over
    the maps nearest-upsampled to ``size`` without materializing them (see the module
    docstring for the rewrites); maps whose size does not divide ``size`` are upsampled.
    ``checkpoint=True`` recomputes each step in backward instead of keeping its
    activations, one step at a time, so at most one step's activations are alive.
    """

    def __init__(self, channels: int, kernel_size: int = 3, checkpoint: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.padding = kernel_size // 2
        self.checkpoint = checkpoint
        self.conv = nn.Conv2d(2 * channels, 4 * channels, kernel_size, padding=self.padding, bias=True)

    def forward(self, sequence: list[torch.Tensor], size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        size = tuple(size or sequence[-1].shape[-2:])
        c_in = self.channels
        weight, bias = _autocast_once(self.conv.weight), _autocast_once(self.conv.bias)
        # Views through splits, not slices: a split's backward is one concatenation, where
        # each slice would allocate and fill a zero gradient of the whole weight.
        weight_x, weight_h = weight.split(c_in, 1)
        (wi, _, wo, wg), (bi, _, bo, bg) = weight_x.split(c_in), bias.split(c_in)
        weights = _StepWeights(weight, bias, weight_x, weight_h, torch.cat([wi, wo, wg]), torch.cat([bi, bo, bg]))
        memory_format = _memory_format(sequence[-1])
        hidden: list[torch.Tensor] = []
        h = c = None
        for x in sequence:
            h, c = maybe_recompute(self.checkpoint, self._step, x, h, c, size, memory_format, weights)
            hidden.append(h)
        return hidden

    def _step(self, x: torch.Tensor, h: torch.Tensor | None, c: torch.Tensor | None, size: tuple[int, int],
              memory_format: torch.memory_format, w: _StepWeights) -> tuple[torch.Tensor, torch.Tensor]:
        """(h', c') for input ``x`` (at ``size`` or an integer fraction of it); h = c = None is the zero state."""
        scale = _integer_scale(x.shape[-2:], size)
        if scale is None:
            x, scale = F.interpolate(x, size=size, mode="nearest"), (1, 1)
        kernel = w.full.shape[-1]
        if h is None:  # zero state: no conv_h, no forget gate
            if scale == (1, 1):
                return lstm_gates(F.conv2d(x, w.zero_state, w.zero_state_bias, padding=self.padding), None)
            h, c = lstm_gates(upsampled_conv(x, w.zero_state, w.zero_state_bias, scale), None)
            return tuple(scatter_phases(t, scale, x.shape[-2:], kernel, memory_format=memory_format)
                         for t in (h, c))
        if scale == (1, 1):
            return lstm_gates(F.conv2d(torch.cat([x, h], 1), w.full, w.bias, padding=self.padding), c)
        gates = F.conv2d(h, w.h, None, padding=self.padding)
        gates = scatter_phases(upsampled_conv(x, w.x, w.bias, scale), scale, x.shape[-2:], kernel, base=gates)
        return lstm_gates(gates, c)


class _StepWeights(NamedTuple):
    """Views of the ConvLSTM's parameters, made once per forward for the three steps."""

    full: torch.Tensor  # 4C × 2C × k × k, over [x, h]
    bias: torch.Tensor  # 4C
    x: torch.Tensor  # 4C × C × k × k, over x
    h: torch.Tensor  # 4C × C × k × k, over h
    zero_state: torch.Tensor  # 3C × C × k × k: the i, o, g rows over x
    zero_state_bias: torch.Tensor  # 3C


def maybe_recompute(enabled: bool, fn: Callable, *args):
    """``fn(*args)``, as a non-reentrant checkpoint (recomputed in backward) when ``enabled`` and training."""
    if enabled and torch.is_grad_enabled():
        return recompute(fn, *args, use_reentrant=False)
    return fn(*args)


def _autocast_once(t: torch.Tensor) -> torch.Tensor:
    """``t`` in autocast's dtype when autocast is on: one cast per forward instead of one per use."""
    device = t.device.type
    if torch.is_autocast_enabled(device):
        return t.to(torch.get_autocast_dtype(device))
    return t


def _integer_scale(source: torch.Size, size: tuple[int, int]) -> tuple[int, int] | None:
    """(s_h, s_w) when ``size`` is an integer multiple of ``source``, else None."""
    if size[0] % source[0] or size[1] % source[1]:
        return None
    return size[0] // source[0], size[1] // source[1]


@FUSIONS.register_module(name="convlstm")
class ConvLSTMFusion(nn.Module):
    """The paper's HL pathway: laterals, then a ConvLSTM over P5 → P4 → P3 of each image.

    ``checkpoint=True`` recomputes the ConvLSTM's steps in backward instead of keeping
    their activations (less memory for one more ConvLSTM forward per training step).
    """

    laterals_class: type[Laterals] = Laterals
    convlstm_class: type[ConvLSTM] = ConvLSTM

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256, checkpoint: bool = False) -> None:
        super().__init__()
        self.out_channels = channels
        self.laterals = self.laterals_class(in_channels, channels)
        self.convlstm = self.convlstm_class(channels, checkpoint=checkpoint)
        init_new_layers(self)

    def forward(self, feats: Maps) -> Maps:
        p3, p4, p5 = self.laterals.native(feats)
        f5, f4, f3 = self.convlstm([p5, p4, p3], p3.shape[-2:])
        return f3, f4, f5


@FUSIONS.register_module(name="sum")
class SumFusion(nn.Module):
    """FPN-style add (Table 2's "HL"): F5 = P5, F4 = P4 + F5, F3 = P3 + F4."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256) -> None:
        super().__init__()
        self.out_channels = channels
        self.laterals = Laterals(in_channels, channels)
        init_new_layers(self)

    def forward(self, feats: Maps) -> Maps:
        p3, p4, p5 = self.laterals(feats)
        f4 = p4 + p5
        return p3 + f4, f4, p5
