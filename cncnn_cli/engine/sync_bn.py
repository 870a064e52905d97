"""SyncBatchNorm under DDP that keeps what each BatchNorm layer computes.

mmengine's (and torch's) ``convert_sync_batchnorm`` turns every BatchNorm subclass into a
plain ``torch.nn.SyncBatchNorm``, losing a subclass's own ``forward`` signature and
running-statistics rule. Here a layer with a ``to_sync_batchnorm()`` method supplies its own
synchronized form; any other BatchNorm gets torch's.
"""
from __future__ import annotations

import sys

from mmengine.config import Config
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cncnn_cli.utils.device import resolve_device
from cncnn_cli.engine.batching import process_count
from cncnn_cli.errors import CncnnError


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by its synchronized form (parameters shared)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
        own = getattr(module, "to_sync_batchnorm", None)
        return own() if own is not None else nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def sync_bn_applies(cfg: Config) -> bool:
    """Whether ``sync_bn`` takes effect; fails early where it cannot run.

    torch's SyncBatchNorm trains only on GPUs: several CPU processes cannot use it, and one
    process has nothing to synchronize with.
    """
    if not cfg.sync_bn:
        return False
    processes = process_count(cfg)
    if processes == 1:
        print("note: --sync-bn has no effect in a single process (nothing to synchronize with); training "
              "without it", file=sys.stderr)
        return False
    if resolve_device(cfg.device).type != "cuda":
        raise CncnnError(f"--sync-bn needs CUDA: torch's SyncBatchNorm cannot run on CPU; drop --sync-bn for "
                         f"these {processes} CPU processes (each then normalizes its own batch)")
    return True
