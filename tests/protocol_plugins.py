"""A --plugin file for tests: a demo set that logs which images are read, a backbone without
BatchNorm, and a hook that fakes CUDA running out of memory."""
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

from cncnn_cli.registry import BACKBONES, DATASETS
from cncnn_plugins.datasets.demo import Demo

#: (split, transform is the training one, index) of every image read, in order.
READS: list[tuple[str, bool, int]] = []


@DATASETS.register_module(name="logged_demo", force=True)
class LoggedDemo(Demo):
    def __getitem__(self, index: int):
        READS.append((self.split, "RandomCrop" in repr(self.transform), index))
        return super().__getitem__(index)


@BACKBONES.register_module(name="tiny_no_bn", force=True)
class TinyNoBatchNorm(nn.Module):
    """Three strided convolutions; nothing in it depends on the batch, unlike BatchNorm."""

    out_channels = (8, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(3, 8, 3, stride=8, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                     nn.Conv2d(8, 8, 3, stride=2, padding=1)])

    def forward(self, images: torch.Tensor):
        maps, x = [], images
        for stage in self.stages:
            x = torch.relu(stage(x))
            maps.append(x)
        return tuple(maps)


@HOOKS.register_module(force=True)
class OutOfMemoryAt(Hook):
    """Raises CUDA's out-of-memory error at the start of a (0-based) epoch, as a too-large batch would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.epoch == self.epoch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
