"""Experiment trackers: mmengine's visualization backends, and what cncnn sends them.

A run's trackers are the recipe's ``vis_backends`` (mmengine backend configs, options and
all) plus one per ``--vis-backend NAME``; with none asked for, TensorBoard when it is
installed. mmengine itself gives every tracker the resolved config (``add_config``), the
iteration scalars (loss, lr; step = iteration) and each validation's metrics (step = epoch).
``TrackerHook`` adds what ``metrics.json`` holds: each epoch's record under ``per_epoch/`` (step =
epoch; mmengine's own scalars already include one named ``epoch``), the final test of a val-chosen checkpoint under ``test/``, and the best checkpoint's
path as the tag ``best_checkpoint``. Before any work dir exists, :func:`check_trackers_start` opens
each tracker's store, so that one refusing to start is one line, not a traceback from the runner.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from cncnn_cli.config.trackers import TRACKERS
from cncnn_cli.engine.hooks import WorkDirHook
from cncnn_cli.errors import CncnnError, first_line

#: How each tracker records a text value: mmengine's backends take only scalars, images and the config.
_TAGGERS: dict[str, Callable[[object, str, str], None]] = {
    "MLflowVisBackend": lambda mlflow, key, value: mlflow.set_tag(key, value),
    "WandbVisBackend": lambda wandb, key, value: wandb.run.summary.update({key: value}),
    "TensorboardVisBackend": lambda writer, key, value: writer.add_text(key, value),
    "ClearMLVisBackend": lambda clearml, key, value: clearml.Task.current_task().set_user_properties(**{key: value}),
    "DVCLiveVisBackend": lambda live, key, value: live.log_param(key, value),
    "AimVisBackend": lambda run, key, value: run.__setitem__(key, value),
}


def check_installed(backends: list[dict]) -> None:
    """Each tracker's package is importable: a missing one is named before any work dir exists."""
    for backend in backends:
        name, package = next((name, package) for name, (kind, package) in TRACKERS.items()
                             if kind == backend["type"])
        if importlib.util.find_spec(package) is None:
            raise CncnnError(f"--vis-backend {name} needs the {package} package: pip install {package}")


def resolve_backends(backends: list[dict]) -> list[dict]:
    """The trackers a run writes to, completed.

    None asked for: TensorBoard if installed, as before trackers were a choice. An MLflow backend
    without ``tracking_uri`` takes ``MLFLOW_TRACKING_URI`` (mmengine would ignore the variable and
    write a file store under the work dir).
    """
    backends = [dict(backend) for backend in backends]
    if not backends and importlib.util.find_spec("tensorboard") is not None:
        backends = [{"type": "TensorboardVisBackend"}]
    for backend in backends:
        if backend["type"] == "MLflowVisBackend" and backend.get("tracking_uri") is None \
                and os.environ.get("MLFLOW_TRACKING_URI"):
            backend["tracking_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    return backends


def check_trackers_start(backends: list[dict]) -> None:
    """Open each tracker's store as its backend will, before any work dir exists.

    mmengine starts a tracker inside the runner, after the work dir is made, and a refusal there
    is a long traceback; here it is one line naming the tracker, its URI and the fix.
    """
    for backend in backends:
        if backend["type"] == "MLflowVisBackend":
            _check_mlflow(backend)


def _check_mlflow(backend: dict) -> None:
    """MLflow's client opens the store of the backend's URI and reads its experiment, as
    mmengine's backend will first. Without a URI mmengine writes a file store under the work dir,
    which a scratch folder stands in for."""
    from mlflow import MlflowClient
    from mlflow.store.db.db_types import DATABASE_ENGINES

    uri = backend.get("tracking_uri")
    shown = f"the tracking URI {uri}" if uri else "its default file store in the work dir (no MLFLOW_TRACKING_URI)"
    scheme = urlparse(uri or "").scheme.partition("+")[0]
    missing = [name for name in ("sqlalchemy", "alembic") if importlib.util.find_spec(name) is None]
    if scheme in DATABASE_ENGINES and missing:
        raise CncnnError(f"--vis-backend mlflow: {shown} is a database, which needs MLflow's database support "
                         f"({', '.join(missing)} not installed): pip install 'cncnn[mlflow]'")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            MlflowClient(uri or Path(scratch).as_uri()).get_experiment_by_name(backend.get("exp_name") or "Default")
        except Exception as exc:
            if "MLFLOW_ALLOW_FILE_STORE" in str(exc):
                raise CncnnError(
                    f"--vis-backend mlflow: MLflow refuses {shown}, a file store: set MLFLOW_TRACKING_URI to a "
                    f"database (sqlite:///mlflow.db) or a server (http://HOST:5000), or MLFLOW_ALLOW_FILE_STORE=true "
                    f"to keep the file store") from None
            hint = ("check that the server runs and answers there" if scheme in ("http", "https")
                    else "check the URI (MLFLOW_TRACKING_URI, or tracking_uri in vis_backends)")
            raise CncnnError(f"--vis-backend mlflow: cannot open {shown} ({first_line(exc)}); {hint}") from None


def _numbers(record: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in record.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)}


@HOOKS.register_module()
class TrackerHook(Hook):
    """Sends the trackers what ``WorkDirHook`` records in metrics.json, as it records it."""

    priority = "LOWEST"  # after WorkDirHook (VERY_LOW) has recorded the epoch

    def __init__(self, backends: list[dict]) -> None:
        self.backends = [backend.get("name", backend["type"]) for backend in backends]

    def before_train(self, runner) -> None:
        self.records = next(hook for hook in runner.hooks if isinstance(hook, WorkDirHook))

    def after_train_epoch(self, runner) -> None:
        entry = self.records.metrics["history"][-1]
        runner.visualizer.add_scalars(_numbers(entry, "per_epoch"), step=entry["epoch"])

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics:  # the validation's part of the epoch's record
            result = self.records.metrics["last"]
            runner.visualizer.add_scalars(_numbers(result, "per_epoch"), step=result["epoch"])

    def after_test_epoch(self, runner, metrics=None) -> None:
        tested = self.records.metrics.get("test_at_best_val")
        if metrics and tested:
            runner.visualizer.add_scalars(_numbers(tested, "test"), step=tested["epoch"])

    def after_train(self, runner) -> None:
        if is_main_process() and self.records.metrics.get("best"):
            self._tag(runner, "best_checkpoint", str(Path(runner.work_dir, "best.safetensors").resolve()))

    def _tag(self, runner, key: str, value: str) -> None:
        for name in self.backends:
            backend = runner.visualizer.get_backend(name)
            _TAGGERS[type(backend).__name__](backend.experiment, key, value)
