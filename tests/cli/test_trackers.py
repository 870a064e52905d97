"""Experiment trackers: the choice of backends, install hints, and a real MLflow run read back."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cncnn_cli.cli.main import main
from cncnn_cli.config.resolve import resolve_config
from cncnn_cli.engine.plan import prepare
from tests.helpers.configs import DEMO, TINY

REAL_FIND_SPEC = importlib.util.find_spec


def _installed(monkeypatch, **packages: bool) -> None:
    """Pretend each named package is (not) installed; every other lookup is the real one."""
    def find_spec(name, package=None):
        if name in packages:
            return REAL_FIND_SPEC("json") if packages[name] else None
        return REAL_FIND_SPEC(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _trackers(*args) -> list[dict]:
    """The trackers a run of ``resolve_config(*args)`` writes to (its plan's)."""
    return list(prepare(resolve_config(*args)).trackers)


def test_tensorboard_is_the_default_only_when_installed_and_nothing_else_is_asked_for(monkeypatch):
    _installed(monkeypatch, tensorboard=True, mlflow=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _trackers("demo") == [{"type": "TensorboardVisBackend"}]
    assert _trackers("demo", {"vis_backend": ["mlflow"]}) == [{"type": "MLflowVisBackend"}]
    both = _trackers("demo", {"vis_backend": ["tensorboard", "mlflow", "tensorboard"]})
    assert [backend["type"] for backend in both] == ["TensorboardVisBackend", "MLflowVisBackend"]
    _installed(monkeypatch, tensorboard=False)
    assert _trackers("demo") == []
    assert resolve_config("demo").vis_backends == []  # the config stays the user's: no tracker asked for


def test_flag_and_recipe_key_make_one_backend_with_the_options(monkeypatch):
    _installed(monkeypatch, mlflow=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    trackers = _trackers("demo", {"vis_backend": ["mlflow"]}, ["vis_backends.0.exp_name=cub"])
    assert trackers == [{"type": "MLflowVisBackend", "exp_name": "cub", "tracking_uri": "http://tracker:5000"}]
    given = _trackers("demo", {"vis_backend": ["mlflow"]},
                      ["vis_backends=[{'type': 'MLflowVisBackend', 'tracking_uri': 'file:/runs'}]"])
    assert given == [{"type": "MLflowVisBackend", "tracking_uri": "file:/runs"}]


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_a_missing_tracker_package_is_an_install_hint_before_any_work_dir(tmp_path, capsys, monkeypatch, command):
    _installed(monkeypatch, mlflow=False)
    work_dir = tmp_path / "work"
    code = main([command, "demo", "--work-dir", str(work_dir), *TINY, *DEMO, "--epochs", "1",
                 "--vis-backend", "mlflow"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: --vis-backend mlflow needs the mlflow package: pip install mlflow"
    assert not work_dir.exists()


@pytest.mark.slow
def test_mlflow_run_holds_metrics_json_the_config_and_the_best_checkpoint(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store unless told
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    store = f"file:{tmp_path / 'mlruns'}"
    work_dir = tmp_path / "run"
    code = main(["train", "demo", "--work-dir", str(work_dir), *TINY, *DEMO, "--epochs", "2", "--val-fraction", "0.25",
                 "--vis-backend", "mlflow", "--cfg-options", f"vis_backends.0.tracking_uri={store}",
                 "--cfg-options", "vis_backends.0.exp_name=trackers"])
    assert code == 0
    metrics = json.loads((work_dir / "metrics.json").read_text())

    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("trackers").experiment_id])
    assert len(runs) == 1  # training and the final test in one run
    run = runs[0]
    assert run.info.status == "FINISHED"

    def logged(key: str) -> dict[int, float]:
        return {point.step: point.value for point in client.get_metric_history(run.info.run_id, key)}

    for entry in metrics["history"]:
        numbers = {k: v for k, v in entry.items() if k != "epoch" and isinstance(v, (int, float))}
        assert {"loss", "lr", "top1", "top5"} <= set(numbers)
        for key, value in numbers.items():
            assert logged(f"per_epoch/{key}")[entry["epoch"]] == pytest.approx(value), key
    tested = metrics["test_at_best_val"]
    assert logged("test/top1") == {tested["epoch"]: pytest.approx(tested["top1"])}

    params = run.data.params
    assert params["train_cfg.max_epochs"] == "2" and params["batch_size"] == "8" and params["val_fraction"] == "0.25"
    assert run.data.tags["best_checkpoint"] == str((work_dir / "best.safetensors").resolve())
    artifacts = {Path(item.path).name for item in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.py"} <= artifacts
