"""The DataLoader options every training and validation loader shares.

On CUDA the batches are pinned, so that the data preprocessor's non-blocking copy overlaps
with the previous step's compute. Workers are kept alive between epochs (``persistent_workers``:
re-forking them and re-reading the dataset index every epoch, and again for every validation,
leaves the GPU idle), and each keeps ``PREFETCH_FACTOR`` batches ready. Augmentation stays
deterministic with persistent workers: each sample's seed travels with its key from the sampler
(:mod:`cncnn_cli.engine.sampling`), not with the worker.

Each worker leaves the stop signals to the training process
(:func:`cncnn_cli.engine.signals.leave_stop_signals_to_parent`): a
cluster's SIGTERM reaches every process of the job, workers included, and a worker that died of
it would end the run with an error where the training process saves and stops cleanly.
"""
from __future__ import annotations

import torch
from mmengine.dataset import worker_init_fn as mmengine_worker_init
from mmengine.registry import FUNCTIONS

from cncnn_cli.engine.signals import leave_stop_signals_to_parent

#: Batches each worker prepares ahead (torch's default is 2); 4 rides out slow JPEGs.
PREFETCH_FACTOR = 4


@FUNCTIONS.register_module(name="cncnn_worker_init")
def worker_init(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """Seeds a loader worker as mmengine's default does, and leaves the stop signals to the training process."""
    leave_stop_signals_to_parent()
    mmengine_worker_init(worker_id, num_workers=num_workers, rank=rank, seed=seed)


def loader_config(batch_size: int, workers: int, device: torch.device, seed: int, rank: int) -> dict:
    """mmengine ``*_dataloader`` options (without dataset and sampler) for ``workers`` processes
    of process ``rank`` of a run seeded with ``seed``."""
    config = dict(batch_size=batch_size, num_workers=workers, collate_fn=dict(type="cncnn_collate"),
                  pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if workers > 0:  # DataLoader rejects a prefetch_factor without worker processes
        config["prefetch_factor"] = PREFETCH_FACTOR
        config["worker_init_fn"] = dict(type="cncnn_worker_init", num_workers=workers, rank=rank, seed=seed)
    return config
