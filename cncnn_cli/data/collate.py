"""Batch collation that survives unreadable images.

Datasets return ``None`` for an image that cannot be decoded; ``collate`` drops those
items (training replaces them first, marking the replacement) and reports how many were
skipped, so the training hook can count them per epoch.
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.registry import FUNCTIONS

from cncnn_cli.data.gpu_decode import EncodedBatch


@FUNCTIONS.register_module(name="cncnn_collate")
def collate(batch: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack dataset samples into ``{"inputs": uint8 Bx3xHxW, "data_samples": int64 B, "paths": [str],
    "skipped": n}`` (``paths`` name the images, for reports; the model's preprocessor ignores them).
    Under ``gpu_decode`` ``inputs`` is an :class:`~cncnn_cli.data.gpu_decode.EncodedBatch` instead.

    ``skipped`` is the number of ``None`` items dropped plus items marked ``replaced``. When every item was ``None`` the
    batch is empty: ``inputs`` has shape ``0x3x0x0`` and ``data_samples`` shape ``0``;
    callers skip a batch whose ``inputs.shape[0] == 0``.
    """
    items = [item for item in batch if item is not None]
    # dropped (evaluation) or replaced by another image (training: engine.sampling.SeededAugmentation)
    skipped = len(batch) - len(items) + sum(bool(item.get("replaced")) for item in items)
    if not items:
        return {
            "inputs": torch.empty((0, 3, 0, 0), dtype=torch.uint8),
            "data_samples": torch.empty((0,), dtype=torch.int64),
            "paths": [],
            "skipped": skipped,
        }
    images = [torch.as_tensor(item["inputs"]).as_subclass(torch.Tensor) for item in items]
    paths = [str(item.get("path", "")) for item in items]
    plans = [item.get("plan") for item in items]
    # JPEG bytes for the device to decode (data.gpu_decode) travel as they are, beside decoded images
    inputs = EncodedBatch(images, plans, paths) if any(plans) else torch.stack(images)
    labels = torch.tensor([int(item["data_samples"]) for item in items], dtype=torch.int64)
    return {"inputs": inputs, "data_samples": labels, "paths": paths, "skipped": skipped}
