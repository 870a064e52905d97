"""HL-pathway fusions: laterals to one width C, then high → low navigation.

``convlstm`` is the paper's HL pathway; ``sum`` is the FPN-style add of Table 2's "HL".
Both take (S3, S4, S5) and return (F3, F4, F5), all C×H3×W3 (S3's size).

Each part states docs/model.md's formula first, then the exact rewrite it runs by default. The
laterals are computed at the native size and upsampled last. :meth:`ConvLSTM.plain_step` is
the ConvLSTM's formula (``impl='plain'`` runs it). Two exact fast paths give its numbers,
``impl='phase'`` (:meth:`ConvLSTM.fast_step`, the kernels of :mod:`cncnn_cli.models.ops`)
and ``impl='conv'`` (:meth:`ConvLSTM.conv_step`, library convolutions); ``auto`` picks one per device.
tests/models/test_speedups.py and tests/models/test_convlstm_paper_first.py check the rewrites
against the formula, values and gradients.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cncnn_cli.errors import CncnnError
from cncnn_cli.models.ops import (accumulation_dtype, autocast_once, integer_scale, lstm_gates, maybe_recompute,
                                  memory_format_of, scatter_phases, upsampled_conv)
from cncnn_cli.registry import FUSIONS
from cncnn_plugins.init import init_new_layers

Maps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

#: The ConvLSTM's formulations (``impl``): the formula as written, two exact fast paths, and ``auto``,
#: which picks a fast path per device (:func:`resolve_impl`).
IMPLS = ("plain", "phase", "conv", "auto")


def resolve_impl(impl: str, device: torch.device, compiling: bool = False) -> str:
    """The formulation ``impl`` runs on ``device``: ``auto`` is ``conv`` on CUDA and under torch.compile, else ``phase``.

    By device type, not by timing, so that a run is deterministic and the choice is known
    before the first batch. ``phase`` (hand im2col + one GEMM of the upsampled phases) wins on
    CPU, where oneDNN is slow at thousands of output channels on small maps; cuDNN is fast at
    the plain convolutions of ``conv``, and the compiler can trace ``conv`` whole (the phase
    kernels stay eager under torch.compile).
    """
    if impl != "auto":
        return impl
    return "conv" if compiling or device.type == "cuda" else "phase"


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

    Exact speed-up (docs/model.md, 'Laterals'): 1×1 convs, BatchNorm and ReLU commute with nearest
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


class ConvLSTM(nn.Module):
    """One ConvLSTM layer (docs/model.md, 'ConvLSTM'): hidden C, a k×k convolution (3×3), padding k//2, bias.

    For inputs x₁, x₂, x₃ (P5, P4, P3 of one image), each nearest-upsampled to ``size``,
    from the zero state h₀ = c₀ = 0::

        i, f, o, g = split(conv([xₜ, hₜ₋₁]), C)    one conv, 2C → 4C channels, gate order i, f, o, g
        cₜ = σ(f)·cₜ₋₁ + σ(i)·tanh(g)
        hₜ = σ(o)·tanh(cₜ)

    ``forward(sequence, size)`` returns [h₁, h₂, h₃] (F5, F4, F3); ``size`` defaults to the
    last input's. ``impl`` (:data:`IMPLS`, :func:`resolve_impl`) chooses the formulation:
    ``plain`` runs :meth:`plain_step`, the formula in plain torch ops, for readers; the others
    run an exact fast path, the same numbers without zero-state work: ``phase`` is
    :meth:`fast_step` (no upsampled inputs), ``conv`` is :meth:`conv_step` (library
    convolutions only), ``auto`` (the default) one of the two per device. ``checkpoint=True`` recomputes each step in backward instead of
    keeping its activations, so at most one step's activations are alive.
    """

    def __init__(self, channels: int, kernel_size: int = 3, checkpoint: bool = False, impl: str = "auto") -> None:
        super().__init__()
        if impl not in IMPLS:
            raise CncnnError(f"fusion impl {impl!r}: expected one of {', '.join(IMPLS)}")
        self.channels = channels
        self.padding = kernel_size // 2
        self.checkpoint = checkpoint
        self.impl = impl
        self.conv = nn.Conv2d(2 * channels, 4 * channels, kernel_size, padding=self.padding, bias=True)

    def impl_on(self, device: torch.device, compiling: bool = False) -> str:
        """What runs on ``device``: ``plain``, ``phase`` or ``conv``."""
        return resolve_impl(self.impl, device, compiling)

    def forward(self, sequence: list[torch.Tensor], size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        size = tuple(size or sequence[-1].shape[-2:])
        impl = self.impl_on(sequence[-1].device, torch.compiler.is_compiling())
        step = self.plain_step
        if impl == "phase":
            step = partial(self.fast_step, memory_format=memory_format_of(sequence[-1]), w=self._step_weights())
        elif impl == "conv":
            step = partial(self.conv_step, w=self._step_weights())
        hidden: list[torch.Tensor] = []
        h = c = None
        for x in sequence:
            h, c = maybe_recompute(self.checkpoint, step, x, h, c, size)
            hidden.append(h)
        return hidden

    def plain_step(self, x: torch.Tensor, h: torch.Tensor | None, c: torch.Tensor | None,
                   size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(h', c') by the formula: x upsampled to ``size``, one conv over [x, h]; h = c = None is the zero state."""
        x = F.interpolate(x, size=size, mode="nearest")
        if h is None:
            h = c = x.new_zeros(x.shape[0], self.channels, *size)
        i, f, o, g = self.conv(torch.cat([x, h], 1)).split(self.channels, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def fast_step(self, x: torch.Tensor, h: torch.Tensor | None, c: torch.Tensor | None, size: tuple[int, int],
                  memory_format: torch.memory_format, w: _StepWeights) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`plain_step`'s (h', c'), by exact rewrites; ``w`` holds views of the weight made once per forward.

        ``x`` is at ``size`` (×1) or an integer fraction of it (×s, never upsampled); ×1 and any
        other size take :meth:`conv_step`. ``conv([x, h]) = conv_x(x) + conv_h(h)`` with the
        weight split along its input channels, and a convolution of a ×s nearest-upsampled map
        is :func:`~cncnn_cli.models.ops.upsampled_conv` on the small map: its distinct output
        phases, scattered to full size by :func:`~cncnn_cli.models.ops.scatter_phases`. The gate
        math is :func:`~cncnn_cli.models.ops.lstm_gates`, one autograd node.
        """
        scale = integer_scale(x.shape[-2:], size)
        if scale is None or scale == (1, 1):  # at full size the phases save nothing: the library convolutions
            return self.conv_step(x, h, c, size, w)
        kernel = w.full.shape[-1]
        if h is None:
            # Zero state: conv_h(0) = 0 and σ(f)·0 = 0, so only conv_x's i, o, g rows are computed.
            # The gate math is elementwise, so it runs on the phases; h' and c' are scattered after.
            h, c = lstm_gates(upsampled_conv(x, w.zero_state, w.zero_state_bias, scale), None)
            return tuple(scatter_phases(t, scale, x.shape[-2:], kernel, memory_format=memory_format)
                         for t in (h, c))
        # conv_h(h) at full size; conv_x(up(x)) from the small x, added into it phase by phase. Under
        # fp16 autocast the gate pre-activation is summed in fp32 (conv_x's phases unrounded, an fp32
        # GEMM) and rounded once, as the formula's one convolution over [x, h] is. bf16 keeps its
        # GEMM: there the operands' rounding dominates (an fp32 sum measured no better) and bf16 is
        # the CPU's --amp, where the GEMM's speed counts. fp32 and fp64 take no-op casts.
        gates = F.conv2d(h, w.h, None, padding=self.padding)
        low = gates.dtype
        accumulate = accumulation_dtype(low) if low == torch.float16 else low
        phases = upsampled_conv(x, w.x, w.bias, scale, dtype=accumulate)
        gates = scatter_phases(phases, scale, x.shape[-2:], kernel, base=gates.to(accumulate))
        return lstm_gates(gates.to(low), c)

    def conv_step(self, x: torch.Tensor, h: torch.Tensor | None, c: torch.Tensor | None, size: tuple[int, int],
                  w: _StepWeights) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`plain_step`'s (h', c') with library convolutions only (cuDNN's fast case); ``w`` as in :meth:`fast_step`.

        x is upsampled here, at the ConvLSTM's input (the laterals ran at native size). At the
        zero state ``conv_h(0) = 0`` and ``σ(f)·0 = 0``: one convolution of x with the i, o, g
        rows. Later steps are the formula's one convolution over [x, h], which has the
        multiply-adds of ``conv_x(x) + conv_h(h)`` in one call. The gate math is
        :func:`~cncnn_cli.models.ops.lstm_gates`.
        """
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="nearest")
        if h is None:
            return lstm_gates(F.conv2d(x, w.zero_state, w.zero_state_bias, padding=self.padding), None)
        return lstm_gates(F.conv2d(torch.cat([x, h], 1), w.full, w.bias, padding=self.padding), c)

    def _step_weights(self) -> _StepWeights:
        """The views :meth:`fast_step` and :meth:`conv_step` use, in autocast's dtype when autocast is on."""
        c_in = self.channels
        weight, bias = autocast_once(self.conv.weight), autocast_once(self.conv.bias)
        # Views through splits, not slices: a split's backward is one concatenation, where
        # each slice would allocate and fill a zero gradient of the whole weight.
        weight_x, weight_h = weight.split(c_in, 1)
        (wi, _, wo, wg), (bi, _, bo, bg) = weight_x.split(c_in), bias.split(c_in)
        return _StepWeights(weight, bias, weight_x, weight_h, torch.cat([wi, wo, wg]), torch.cat([bi, bo, bg]))


class _StepWeights(NamedTuple):
    """Views of the ConvLSTM's parameters, made once per forward for the three steps."""

    full: torch.Tensor  # 4C × 2C × k × k, over [x, h]
    bias: torch.Tensor  # 4C
    x: torch.Tensor  # 4C × C × k × k, over x
    h: torch.Tensor  # 4C × C × k × k, over h
    zero_state: torch.Tensor  # 3C × C × k × k: the i, o, g rows over x
    zero_state_bias: torch.Tensor  # 3C


@FUSIONS.register_module(name="convlstm")
class ConvLSTMFusion(nn.Module):
    """The paper's HL pathway: laterals, then a ConvLSTM over P5 → P4 → P3 of each image.

    ``checkpoint=True`` recomputes the ConvLSTM's steps in backward instead of keeping
    their activations (less memory for one more ConvLSTM forward per training step).
    ``impl`` chooses the ConvLSTM's formulation (:data:`IMPLS`, :func:`resolve_impl`):
    ``plain`` runs its formula as written (:meth:`ConvLSTM.plain_step`; the laterals stay
    computed at the native size, exact too), ``phase`` and ``conv`` an exact fast path,
    ``auto`` (the default) one per device. It changes no parameter: weights load across impls.
    """

    laterals_class: type[Laterals] = Laterals

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256, checkpoint: bool = False,
                 impl: str = "auto") -> None:
        super().__init__()
        self.out_channels = channels
        self.laterals = self.laterals_class(in_channels, channels)
        self.convlstm = ConvLSTM(channels, checkpoint=checkpoint, impl=impl)
        init_new_layers(self)

    @classmethod
    def check_config(cls, part: dict, where: str) -> None:
        """``impl`` is one of :data:`IMPLS` (checked with the recipe, before anything is built)."""
        impl = part.get("impl", "auto")
        if impl not in IMPLS:
            raise CncnnError(f"{where}.impl: {impl!r} is not one of {', '.join(IMPLS)}")

    def impl_on(self, device: torch.device, compiling: bool = False) -> str:
        """The ConvLSTM path that runs on ``device`` (``plain``, ``phase`` or ``conv``), for reports."""
        return self.convlstm.impl_on(device, compiling)

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
