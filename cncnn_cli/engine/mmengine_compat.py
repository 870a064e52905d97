"""Every use of mmengine internals, and every change cncnn makes to mmengine's behaviour, in one place.

Verified against mmengine 0.10.7 (the newest release; see docs/mmengine.md). A new
mmengine release is checked here first.
"""
from __future__ import annotations

import logging
import os.path as osp
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mmengine.device.utils
import torch
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

VERIFIED_MMENGINE = "0.10.7"


def place_mmengine_on(device: torch.device) -> None:
    """Make ``device`` the one mmengine puts the model on (``Runner.wrap_model``), resumes onto and
    autocasts for.

    mmengine fixes its device when it is imported: CUDA whenever a GPU is visible. A run with
    ``--device cpu`` on a GPU machine would otherwise train on the GPU (and ``CUDA_VISIBLE_DEVICES``
    set afterwards changes nothing: CUDA has already counted its devices by then).
    """
    mmengine.device.utils.DEVICE = device.type


def mmengine_loggers() -> list[logging.Logger]:
    """Every MMLogger made in this process (mmengine keeps them in a private class dict)."""
    return list(MMLogger._instance_dict.values())


@contextmanager
def no_config_dump() -> Iterator[None]:
    """Build a Runner without its dump of the config into the work dir.

    cncnn saves the validated config as ``config.py``. ``Runner.__init__`` would add its own copy,
    named after the recipe file, in which the keys cncnn handles itself read ``None``. A recipe
    named ``config.py`` would even overwrite cncnn's.
    """
    dump = Runner.dump_config
    Runner.dump_config = lambda self: None
    try:
        yield
    finally:
        Runner.dump_config = dump


@contextmanager
def visualizer_open(runner: Runner) -> Iterator[None]:
    """The trackers' runs stay open from training through the final test, and close once.

    mmengine's ``LoggerHook.after_run`` closes the visualizer after ``train()`` and again after
    ``test()``: the test's metrics would go to a closed tracker (MLflow would start a second run).
    """
    close = runner.visualizer.close
    runner.visualizer.close = lambda: None
    try:
        yield
    finally:
        close()


def load_local_weights_only(filename: str, map_location=None) -> Any:
    """mmengine's local-file checkpoint loader, weights-only: a state file can never run code.

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; this replaces its scheme for
    local paths (``CheckpointLoader.register_scheme(prefixes='', force=True)``). Everything
    loads onto the CPU, whatever ``map_location`` says: ``Runner.resume`` asks for the run's
    device, but the RNG states in a training state must be CPU tensors (``torch.set_rng_state``
    refuses CUDA ones), and ``load_state_dict`` copies weights and optimizer state to where the
    model's parameters are anyway.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(filename, map_location="cpu", weights_only=True)


CheckpointLoader.register_scheme(prefixes="", force=True)(load_local_weights_only)
