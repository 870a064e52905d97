"""HL-pathway fusions: laterals to one width C, then high → low navigation.

``convlstm`` is the paper's HL pathway; ``sum`` is the FPN-style add of Table 2's "HL".
Both take (S3, S4, S5) and return (F3, F4, F5), all C×H3×W3 (S3's size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
            var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            count = x.numel() // x.shape[1] * replication
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (count / (count - 1)), self.momentum)
            self.num_batches_tracked.add_(1)
        return out


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
    and upsampled last (16× and 4× less work). Image sizes are multiples of 32 so the
    factors are integers.
    """

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.fpa5 = FeaturePyramidAttention(c5, channels)
        self.lateral4 = nn.Conv2d(c4, channels, 1)
        self.lateral3 = nn.Conv2d(c3, channels, 1)

    def forward(self, feats: Maps) -> Maps:
        s3, s4, s5 = feats
        size = s3.shape[-2:]
        replication = (size[0] * size[1]) // (s5.shape[-2] * s5.shape[-1])
        p5 = F.interpolate(self.fpa5(s5, replication), size=size, mode="nearest")
        p4 = F.interpolate(self.lateral4(s4), size=size, mode="nearest")
        return self.lateral3(s3), p4, p5


class ConvLSTM(nn.Module):
    """One ConvLSTM layer (3×3, padding 1, bias) run over a short sequence of maps.

    The parameters are the paper's single convolution over [x, h] with 4C outputs in
    gate order i, f, o, g. Exact speed-up (MODEL.md): ``conv([x, h]) = conv_x(x) + conv_h(h)``
    with the weight split along its input channels, so the input convolutions of all
    steps run as one batched call and the first step (h = 0, c = 0) skips ``conv_h``.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.padding = kernel_size // 2
        self.conv = nn.Conv2d(2 * channels, 4 * channels, kernel_size, padding=self.padding, bias=True)

    def forward(self, sequence: list[torch.Tensor]) -> list[torch.Tensor]:
        c_in = self.channels
        weight_x, weight_h = self.conv.weight[:, :c_in], self.conv.weight[:, c_in:]
        batch = sequence[0].shape[0]
        x_gates = F.conv2d(torch.cat(sequence, 0), weight_x, self.conv.bias, padding=self.padding)
        hidden: list[torch.Tensor] = []
        h = c = None
        for gates in x_gates.split(batch, 0):
            if h is not None:
                gates = gates + F.conv2d(h, weight_h, padding=self.padding)
            h, c = lstm_gates(gates, c)
            hidden.append(h)
        return hidden


def lstm_gates(gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``c' = σ(f)·c + σ(i)·tanh(g)``, ``h' = σ(o)·tanh(c')`` with gates in order i, f, o, g.

    ``c = None`` is the zero state: the forget term vanishes.
    """
    i, f, o, g = gates.chunk(4, 1)
    c_next = torch.sigmoid(i) * torch.tanh(g)
    if c is not None:
        c_next = c_next + torch.sigmoid(f) * c
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


@FUSIONS.register_module(name="convlstm")
class ConvLSTMFusion(nn.Module):
    """The paper's HL pathway: laterals, then a ConvLSTM over P5 → P4 → P3 of each image."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256) -> None:
        super().__init__()
        self.out_channels = channels
        self.laterals = Laterals(in_channels, channels)
        self.convlstm = ConvLSTM(channels)
        init_new_layers(self)

    def forward(self, feats: Maps) -> Maps:
        p3, p4, p5 = self.laterals(feats)
        f5, f4, f3 = self.convlstm([p5, p4, p3])
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
