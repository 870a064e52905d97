"""Data loading that makes training reproducible and resumable.

Every training sample is augmented with its own seed, derived from (run seed, epoch,
index): the crops and flips of a run do not depend on the number of loader workers, on
how many batches were drawn before, or on an interruption in between. The sampler
yields ``(epoch, index)`` keys for that, shuffles like mmengine's ``DefaultSampler``
(seed + epoch, sharded by rank) and can start part-way into an epoch on resume.

With gradient accumulation an epoch yields whole optimizer steps only (the tail that
would not fill one is dropped, as ``drop_last`` drops a short batch): every epoch then
ends on an update, so the state saved there holds no half-accumulated gradient.

An unreadable training image is replaced by the next readable one of the dataset (and
counted as skipped), so that every batch keeps its size: BatchNorm never sees a batch of
one, and under DDP no rank takes a step the others do not, with no extra collective.
"""
from __future__ import annotations

import torch
from mmengine.dataset import DefaultSampler
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Dataset

from cncnn_cli.errors import CncnnError

#: Large odd multipliers spread (seed, epoch, index) over the 63-bit seed space.
_EPOCH_MIX, _INDEX_MIX = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * _EPOCH_MIX ^ (epoch + 1) * _INDEX_MIX ^ index * 0x94D049BB133111EB) % (2**63 - 1)


class SeededAugmentation(Dataset):
    """Wraps a dataset; ``(epoch, index)`` keys get deterministic, per-sample random augmentation."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        #: Indices this process found undecodable (each loader worker keeps its own).
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # ``dataset``/``seed`` are not yet set while unpickling in a worker; dunders such as
        # ``__getitems__`` (a Subset's batched fetch) would bypass the seeding.
        if name in ("dataset", "seed", "_unreadable") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.dataset[key]
        epoch, index = key
        size = len(self.dataset)
        for candidate in (i % size for i in range(index, index + size)):
            if candidate in self._unreadable:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, candidate))
                sample = self.dataset[candidate]
            if sample is not None:
                return sample if candidate == index else {**sample, "replaced": True}
            self._unreadable.add(candidate)
        raise CncnnError(f"none of the {size} training images could be decoded; `cncnn data check` lists them")


@DATA_SAMPLERS.register_module(name="cncnn_train_sampler")
class ResumableSampler(DefaultSampler):
    """``DefaultSampler`` that yields ``(epoch, index)``, whole steps of ``step`` samples per rank,
    and can skip the samples already seen."""

    def __init__(self, *args, step: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step = step
        self.skip = 0

    def __iter__(self):
        keys = [(self.epoch, index) for index in super().__iter__()][:len(self)]
        skip, self.skip = self.skip, 0
        return iter(keys[skip:])

    def __len__(self) -> int:
        return self.num_samples - self.num_samples % self.step
