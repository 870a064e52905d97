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


@DATASETS.register_module(name="rank1_unreadable_demo", force=True)
class RankOneUnreadableDemo(Demo):
    """On DDP rank 1, all but one training image of that rank's first batch cannot be decoded.

    The indices are those mmengine's ``DefaultSampler`` deals rank 1 first (shuffled with
    seed 0 + epoch 0, then every second index); the test checks that exactly these were skipped.
    """

    def __init__(self, *args, batch_size: int = 4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(0)).tolist()
        self.unreadable = set(order[1::2][1:batch_size]) if self.split == "train" else set()

    def load_image(self, index: int, as_tensor: bool):
        import torch.distributed as dist

        from cncnn_cli.data.images import ImageReadError

        if index in self.unreadable and dist.is_initialized() and dist.get_rank() == 1:
            raise ImageReadError(f"demo/train/{index:05d}: cannot decode image (test)")
        return super().load_image(index, as_tensor)


@HOOKS.register_module(force=True)
class SleepBeforeTrain(Hook):
    """Holds a run (and its work-dir lock) before its first iteration, for concurrency tests."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def before_train(self, runner) -> None:
        import time

        time.sleep(self.seconds)
