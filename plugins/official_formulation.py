"""The authors' ConvLSTM fusion computed their way: upsample first, one conv over x and h per step.

A reference for ``cncnn benchmark --variant official-formulation`` and for the exactness
tests: the laterals run on the upsampled S5/S4, every step (the zero state included)
convolves the concatenation [x, h], and the gate math is plain elementwise code. Unlike
the released code, the sequence is the three levels of each image (MODEL.md's defect
note). It has the parameters, state-dict keys and constructor of ``convlstm``, so the
two load each other's weights and must agree to float tolerance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cncnn_cli.registry import FUSIONS
from cncnn_plugins.fusions import ConvLSTM, ConvLSTMFusion, Laterals, Maps, maybe_recompute


class UpsampleFirstLaterals(Laterals):
    """P5 = FPA(up(S5)), P4 = conv1×1(up(S4)), P3 = conv1×1(S3): the laterals on S3's grid."""

    def forward(self, feats: Maps) -> Maps:
        s3, s4, s5 = feats
        size = s3.shape[-2:]
        p5 = self.fpa5(F.interpolate(s5, size=size, mode="nearest"))
        p4 = self.lateral4(F.interpolate(s4, size=size, mode="nearest"))
        return self.lateral3(s3), p4, p5


class PlainConvLSTM(ConvLSTM):
    """One convolution over [x, h] at every step from h = c = 0, gates i, f, o, g."""

    def forward(self, sequence: list[torch.Tensor]) -> list[torch.Tensor]:
        batch, _, height, width = sequence[0].shape
        h = sequence[0].new_zeros(batch, self.channels, height, width)
        c = torch.zeros_like(h)
        hidden = []
        for x in sequence:
            h, c = maybe_recompute(self.checkpoint, self._plain_step, x, h, c)
            hidden.append(h)
        return hidden

    def _plain_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.channels, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


@FUSIONS.register_module(name="convlstm_official")
class OfficialConvLSTMFusion(ConvLSTMFusion):
    """The convlstm fusion computed the authors' way: upsample first, one conv over x and h every step."""

    laterals_class = UpsampleFirstLaterals
    convlstm_class = PlainConvLSTM

    def forward(self, feats: Maps) -> Maps:
        p3, p4, p5 = self.laterals(feats)
        f5, f4, f3 = self.convlstm([p5, p4, p3])
        return f3, f4, f5
