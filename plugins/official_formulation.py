"""The authors' ConvLSTM fusion computed their way: upsample first, one conv over x and h per step.

A reference for ``cncnn benchmark --variant official-formulation`` and for the exactness
tests: the laterals run on the upsampled S5/S4, and every step (the zero state included)
convolves the concatenation [x, h] with plain elementwise gate math (the ConvLSTM's
:meth:`~cncnn_plugins.fusions.ConvLSTM.plain_step`). Unlike the released code, the sequence
is the three levels of each image (docs/model.md, 'The defect in the released code'). It has the parameters and
state-dict keys of ``convlstm`` (and its constructor, less ``impl``: always ``plain``), so the two load each
other's weights and must agree to float tolerance.
"""
from __future__ import annotations

import torch.nn.functional as F

from cncnn_cli.registry import FUSIONS
from cncnn_plugins.fusions import ConvLSTMFusion, Laterals, Maps


class UpsampleFirstLaterals(Laterals):
    """P5 = FPA(up(S5)), P4 = conv1×1(up(S4)), P3 = conv1×1(S3): the laterals on S3's grid."""

    def forward(self, feats: Maps) -> Maps:
        s3, s4, s5 = feats
        size = s3.shape[-2:]
        p5 = self.fpa5(F.interpolate(s5, size=size, mode="nearest"))
        p4 = self.lateral4(F.interpolate(s4, size=size, mode="nearest"))
        return self.lateral3(s3), p4, p5


@FUSIONS.register_module(name="convlstm_official")
class OfficialConvLSTMFusion(ConvLSTMFusion):
    """The convlstm fusion computed the authors' way: upsample first, one conv over x and h every step."""

    laterals_class = UpsampleFirstLaterals

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256, checkpoint: bool = False) -> None:
        super().__init__(in_channels, channels, checkpoint, impl="plain")

    def forward(self, feats: Maps) -> Maps:
        p3, p4, p5 = self.laterals(feats)
        f5, f4, f3 = self.convlstm([p5, p4, p3])
        return f3, f4, f5
