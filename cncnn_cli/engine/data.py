"""Data loading that makes training reproducible and resumable.

Every training sample is augmented with its own seed, derived from (run seed, epoch,
index): the crops and flips of a run do not depend on the number of loader workers, on
how many batches were drawn before, or on an interruption in between. The sampler
yields ``(epoch, index)`` keys for that, shuffles like mmengine's ``DefaultSampler``
(seed + epoch, sharded by rank) and can start part-way into an epoch on resume.
"""
from __future__ import annotations

import torch
from mmengine.dataset import DefaultSampler
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Dataset

#: Large odd multipliers spread (seed, epoch, index) over the 63-bit seed space.
_EPOCH_MIX, _INDEX_MIX = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * _EPOCH_MIX ^ (epoch + 1) * _INDEX_MIX ^ index * 0x94D049BB133111EB) % (2**63 - 1)


class SeededAugmentation(Dataset):
    """Wraps a dataset; ``(epoch, index)`` keys get deterministic, per-sample random augmentation."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name in ("dataset", "seed"):  # not yet set during unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.dataset[key]
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]


@DATA_SAMPLERS.register_module(name="cncnn_train_sampler")
class ResumableSampler(DefaultSampler):
    """``DefaultSampler`` that yields ``(epoch, index)`` and can skip the samples already seen."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self):
        keys = [(self.epoch, index) for index in super().__iter__()]
        skip, self.skip = self.skip, 0
        return iter(keys[skip:])
