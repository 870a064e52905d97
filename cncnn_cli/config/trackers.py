"""The experiment trackers a recipe may name: a pure table, read by validation and by ``--vis-backend``.

Whether a tracker's package is installed, and what the environment adds to it
(``MLFLOW_TRACKING_URI``), is the engine's to find out when it plans a run
(``cncnn_cli/engine/plan.py``); validating a recipe reads neither.
"""
from __future__ import annotations

import difflib

from cncnn_cli.errors import CncnnError

#: ``--vis-backend NAME``: (mmengine's backend, the package it imports).
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("TensorboardVisBackend", "tensorboard"),
    "wandb": ("WandbVisBackend", "wandb"),
    "mlflow": ("MLflowVisBackend", "mlflow"),
    "clearml": ("ClearMLVisBackend", "clearml"),
    "dvclive": ("DVCLiveVisBackend", "dvclive"),
    "aim": ("AimVisBackend", "aim"),
}
BACKEND_TYPES = tuple(kind for kind, _ in TRACKERS.values())


def with_flags(backends: list[dict], names: list[str]) -> list[dict]:
    """The recipe's ``vis_backends`` and one entry per ``--vis-backend`` name not among them already."""
    backends = [dict(backend) for backend in backends]
    for name in names:
        if name not in TRACKERS:
            close = difflib.get_close_matches(name, TRACKERS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise CncnnError(f"--vis-backend {name!r}: not a tracker.{hint} Choose from {', '.join(TRACKERS)}")
        kind = TRACKERS[name][0]
        if not any(backend.get("type") == kind for backend in backends):
            backends.append({"type": kind})
    return backends
