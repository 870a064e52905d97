"""Initialization of the layers CN-CNN adds on top of the backbone (docs/model.md, "Initialization")."""
from torch import nn


def init_new_layers(module: nn.Module) -> None:
    """He normal for convolutions (std = sqrt(2 / (k·k·out_channels))), BatchNorm weight 1 / bias 0.

    Applied to ``nn.Conv2d`` only, as the released code does; the spatial-attention
    ``ConvTranspose2d`` and the ``Linear`` layers keep PyTorch's defaults.
    """
    for m in module.modules():
        if type(m) is nn.Conv2d:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
