"""What a run needs to know about the machine and the environment, found once, before any work.

:func:`prepare` reads the launcher's variables (processes, this process's rank and GPU), picks
the device, decides whether SyncBN applies, completes the trackers (TensorBoard by default,
``MLFLOW_TRACKING_URI``) and checks their packages, and picks ``--amp``'s dtype. It runs before
the work dir's lock and before any folder exists, so every error here leaves nothing behind.
The runner, its hooks and the out-of-memory message take the :class:`RunPlan` as given; the
config, which the work dir keeps as ``config.py``, stays the user's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from mmengine.config import Config

from cncnn_cli.engine.amp import autocast_dtype
from cncnn_cli.engine.batching import BatchPlan, plan_batch
from cncnn_cli.engine.launch import local_rank, process_count, process_rank
from cncnn_cli.engine.sync_bn import sync_bn_applies
from cncnn_cli.engine.trackers import check_installed, resolve_backends
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.device import resolve_device


@dataclass(frozen=True)
class RunPlan:
    """One run's machine-dependent settings, fixed before it starts."""

    #: The batch, with the run's processes (the world size) in ``batch.processes``.
    batch: BatchPlan
    #: This process's rank among ``batch.processes``, known before the process group exists.
    rank: int
    #: The device this process trains on; a GPU always with its index.
    device: torch.device
    sync_bn: bool
    #: The mmengine visualization backends the run writes to, completed from the environment.
    trackers: tuple[dict, ...]
    #: ``--amp``'s autocast dtype on ``device``; None without ``--amp``.
    amp_dtype: torch.dtype | None

    @property
    def first_rank(self) -> bool:
        """Rank 0 (or the only process): the one that writes the work dir."""
        return self.rank == 0


def prepare(cfg: Config) -> RunPlan:
    """The run plan of a resolved config on this machine; a :class:`CncnnError` where it cannot run."""
    processes = process_count(cfg.launcher)
    batch = plan_batch(cfg, processes)  # an --effective-batch the batch and processes cannot make fails here
    device = _device(cfg.device, cfg.launcher)
    trackers = resolve_backends(cfg.vis_backends)
    check_installed(trackers)
    return RunPlan(batch=batch, rank=process_rank(cfg.launcher), device=device,
                   sync_bn=sync_bn_applies(cfg.sync_bn, processes, device), trackers=tuple(trackers),
                   amp_dtype=autocast_dtype(device) if cfg.amp else None)


def _device(name: str, launcher: str) -> torch.device:
    """``--device`` resolved; under a launcher a GPU is this process's own (its LOCAL_RANK), which must exist."""
    device = resolve_device(name)
    if device.type != "cuda":
        return device
    return torch.device("cuda", (device.index or 0) if launcher == "none" else _local_gpu(launcher))


def _local_gpu(launcher: str) -> int:
    """This process's GPU under DDP: its ``LOCAL_RANK``, which must name a GPU this process sees."""
    local, visible = local_rank(launcher), torch.cuda.device_count()
    if local >= visible:
        raise CncnnError(f"this is process {local} of its node (LOCAL_RANK) but it sees {visible} GPU(s): start at "
                         f"most {visible} processes per node (torchrun --nproc_per_node); under Slurm ask for "
                         f"--gpus-per-node, not --gpus-per-task, so that every task sees its node's GPUs")
    return local
