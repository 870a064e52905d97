"""The DataLoader options every training and validation loader shares.

On CUDA the batches are pinned, so that the data preprocessor's non-blocking copy overlaps
with the previous step's compute. Workers are kept alive between epochs (``persistent_workers``:
re-forking them and re-reading the dataset index every epoch, and again for every validation,
leaves the GPU idle), and each keeps ``PREFETCH_FACTOR`` batches ready. Augmentation stays
deterministic with persistent workers: each sample's seed travels with its key from the sampler
(:mod:`cncnn_cli.engine.sampling`), not with the worker.
"""
from __future__ import annotations

import torch

#: Batches each worker prepares ahead (torch's default is 2); 4 rides out slow JPEGs.
PREFETCH_FACTOR = 4


def loader_config(batch_size: int, workers: int, device: torch.device) -> dict:
    """mmengine ``*_dataloader`` options (without dataset and sampler) for ``workers`` processes."""
    config = dict(batch_size=batch_size, num_workers=workers, collate_fn=dict(type="cncnn_collate"),
                  pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if workers > 0:  # DataLoader rejects a prefetch_factor without worker processes
        config["prefetch_factor"] = PREFETCH_FACTOR
    return config
