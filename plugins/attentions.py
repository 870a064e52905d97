"""LH-pathway attentions: (F3, F4, F5) → (A3, A4, A5), plus the spatial masks for plots."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cncnn_cli.registry import ATTENTIONS
from cncnn_plugins.init import init_new_layers

Maps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ChannelGate(nn.Module):
    """``CA = σ(conv1×1(C/r→C)(ReLU(conv1×1(C→C/r)(GAP(F)))))``, both convs with bias."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(x, 1)))))


@ATTENTIONS.register_module(name="spatial_channel")
class SpatialChannelAttention(nn.Module):
    """The paper's LH pathway: spatial masks per level, channel masks passed low → high.

    ``SA_l = σ(ConvT3×3(F_l))``; ``CA'_3 = CA_3``, ``CA'_l = (CA_l + CA'_{l-1}) / 2``;
    ``A_l = SA_l·F_l + CA'_l·F_l``. ``mask_size='shared'`` (default, the released code)
    keeps every level at S3's size; ``'native'`` (the paper's text) first average-pools
    F4 and F5 back to their backbone resolution (strides 16 and 32).
    """

    def __init__(self, channels: int, reduction: int = 16, mask_size: str = "shared") -> None:
        super().__init__()
        if mask_size not in ("shared", "native"):
            raise ValueError(f"mask_size must be 'shared' or 'native', not {mask_size!r}")
        self.mask_size = mask_size
        self.spatial = nn.ModuleList(nn.ConvTranspose2d(channels, 1, 3, stride=1, padding=1) for _ in range(3))
        self.channel = nn.ModuleList(ChannelGate(channels, reduction) for _ in range(3))
        init_new_layers(self)

    def forward(self, feats: Maps) -> tuple[Maps, Maps]:
        attended, masks = [], []
        channel_mask = None
        for level, f in enumerate(feats):  # levels 3, 4, 5: low → high
            if self.mask_size == "native" and level:
                f = F.avg_pool2d(f, 2**level)
            spatial_mask = torch.sigmoid(self.spatial[level](f))
            ca = self.channel[level](f)
            channel_mask = ca if channel_mask is None else (ca + channel_mask) / 2
            attended.append(f * (spatial_mask + channel_mask))
            masks.append(spatial_mask)
        return tuple(attended), tuple(masks)


@ATTENTIONS.register_module(name="identity")
class IdentityAttention(nn.Module):
    """No LH pathway: A_l = F_l, and no masks (Table 2's "HL")."""

    def __init__(self, channels: int, **_: object) -> None:
        super().__init__()

    def forward(self, feats: Maps) -> tuple[Maps, None]:
        return tuple(feats), None
