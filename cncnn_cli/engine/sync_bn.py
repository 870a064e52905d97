"""SyncBatchNorm under DDP that keeps what each BatchNorm layer computes.

mmengine's (and torch's) ``convert_sync_batchnorm`` turns every BatchNorm subclass into a
plain ``torch.nn.SyncBatchNorm``, losing a subclass's own ``forward`` and running-statistics
rule, silently. Here a layer with a ``to_sync_batchnorm()`` method supplies its own
synchronized form; timm's ``BatchNormAct2d`` (BatchNorm, activation and drop in one layer, in
most timm trunks) becomes timm's ``SyncBatchNormAct``; a plain BatchNorm gets torch's; any
other subclass with its own ``forward`` is an error rather than a different network.
"""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cncnn_cli.errors import CncnnError


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by its synchronized form (parameters shared)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
        own = getattr(module, "to_sync_batchnorm", None)
        if own is not None:
            return own()
        if _is_timm_norm_act(module):
            from timm.layers import convert_sync_batchnorm as timm_convert

            return timm_convert(module)
        kind = type(module)
        if kind.forward is not _BatchNorm.forward:
            raise CncnnError(f"--sync-bn cannot convert {kind.__module__}.{kind.__qualname__}: it computes more than "
                             f"a BatchNorm (its own forward), which torch's SyncBatchNorm would drop; give it a "
                             f"to_sync_batchnorm() method returning its synchronized form, or drop --sync-bn")
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _is_timm_norm_act(module: nn.Module) -> bool:
    """Whether ``module`` is timm's ``BatchNormAct2d`` (or a subclass), without importing timm for others."""
    if not any(kind.__module__.startswith("timm.") for kind in type(module).__mro__):
        return False
    from timm.layers import BatchNormAct2d

    return isinstance(module, BatchNormAct2d)


def sync_bn_applies(wanted: bool, processes: int, device: torch.device) -> bool:
    """Whether ``sync_bn`` takes effect; fails early where it cannot run.

    torch's SyncBatchNorm trains only on GPUs: several CPU processes cannot use it, and one
    process has nothing to synchronize with.
    """
    if not wanted:
        return False
    if processes == 1:
        print("note: --sync-bn has no effect in a single process (nothing to synchronize with); training "
              "without it", file=sys.stderr)
        return False
    if device.type != "cuda":
        raise CncnnError(f"--sync-bn needs CUDA: torch's SyncBatchNorm cannot run on CPU; drop --sync-bn for "
                         f"these {processes} CPU processes (each then normalizes its own batch)")
    return True
