"""Resumable training state that loads with ``torch.load(weights_only=True)``.

mmengine 0.10.7 saves its message hub as ``HistoryBuffer`` objects and numpy scalars,
which torch ≥ 2.6 refuses to load weights-only (allow-listing them would mean trusting
``builtins.getattr``). Before saving, the hub is reduced to plain numbers and strings
(resume does not need the smoothing buffers); RNG states are stored as tensors and
tuples. mmengine's local-file loader is replaced by one that always loads weights-only
(``mmengine_compat``).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

_DROP = object()


def plain(value: Any) -> Any:
    """Numbers, strings, tensors and containers of them; anything else becomes ``_DROP``."""
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return _DROP if any(v is _DROP for v in items) else type(value)(items)
    if isinstance(value, dict):
        items = {k: plain(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v is not _DROP}
    return _DROP


def plain_message_hub(state: dict) -> dict:
    """The message hub's state without ``HistoryBuffer`` smoothing windows."""
    runtime_info = plain(state.get("runtime_info", {}))
    resumed = {k: v for k, v in plain(state.get("resumed_keys", {})).items() if k in runtime_info}
    return {"log_scalars": {}, "runtime_info": runtime_info, "resumed_keys": resumed}


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the run's GPU only: a resume may see fewer GPUs
    return state


def restore_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s states; the CUDA one onto the current GPU (each rank's own, under DDP)."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
