"""Trackers as teams run them: MLflow behind its recommended database store, a real ``mlflow
server``, and every store that refuses to start as one line before any work dir exists."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cncnn_cli.cli.main import main
from tests.helpers.configs import DEMO, TINY

mlflow = pytest.importorskip("mlflow")

#: The real ones, taken before the suite's no-network fixture replaces them for each test.
_CONNECT = socket.socket.connect
_CREATE_CONNECTION = socket.create_connection
REAL_FIND_SPEC = importlib.util.find_spec


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


@pytest.fixture()
def loopback(monkeypatch):
    """Connections to this machine allowed (a local tracking server); the network still refused."""
    def local(address) -> bool:
        return isinstance(address, str) or address[0] in ("127.0.0.1", "localhost", "::1")

    def connect(sock, address):
        if sock.family != socket.AF_UNIX and not local(address):
            raise OSError("tests must not touch the network")
        return _CONNECT(sock, address)

    def create_connection(address, *args, **kwargs):
        if not local(address):
            raise OSError("tests must not touch the network")
        return _CREATE_CONNECTION(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(work_dir: Path, *extra: str, epochs: int = 2) -> int:
    return main(["train", "demo", "--work-dir", str(work_dir), *TINY, *DEMO, "--epochs", str(epochs),
                 "--val-fraction", "0.25", "--vis-backend", "mlflow", *extra])


def _one_line(err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(part in lines[0] for part in parts), lines[0]
    return lines[0]


def _assert_tracked_as_recorded(uri: str, work_dir: Path, experiment: str = "Default") -> None:
    """Every per-epoch number of metrics.json is in the tracker, at its epoch, with the same value."""
    metrics = json.loads((work_dir / "metrics.json").read_text())
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    compared = 0
    for entry in metrics["history"]:
        for key, value in entry.items():
            if key == "epoch" or not isinstance(value, (int, float)):
                continue
            history = {point.step: point.value for point in client.get_metric_history(run_id, f"per_epoch/{key}")}
            assert history[entry["epoch"]] == value, (key, entry["epoch"])
            compared += 1
    assert compared >= 4 * len(metrics["history"])  # loss, lr, top1, top5 at least, every epoch


# --- stores that refuse: one line, exit 2, no work dir -----------------------------------------------------------

def test_the_default_file_store_refused_by_mlflow_is_one_line_with_the_fix(tmp_path, capsys):
    work_dir = tmp_path / "run"
    assert _train(work_dir, epochs=1) == 2
    _one_line(capsys.readouterr().err, "--vis-backend mlflow", "file store", "MLFLOW_TRACKING_URI",
              "sqlite:///", "MLFLOW_ALLOW_FILE_STORE=true")
    assert not work_dir.exists()


def test_a_file_store_uri_refused_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    work_dir = tmp_path / "run"
    assert _train(work_dir, epochs=1) == 2
    _one_line(capsys.readouterr().err, store, "MLFLOW_ALLOW_FILE_STORE=true")
    assert not work_dir.exists()


@pytest.mark.slow
def test_a_file_store_allowed_by_the_user_trains_and_tracks(tmp_path, monkeypatch):
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert _train(tmp_path / "run", epochs=1) == 0
    _assert_tracked_as_recorded(store, tmp_path / "run")


def test_a_database_uri_without_mlflow_s_database_support_is_the_install_line(tmp_path, capsys, monkeypatch):
    """mlflow-skinny alone cannot open sqlite:///: the extra brings sqlalchemy and alembic."""
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, package=None: None if name == "sqlalchemy" else REAL_FIND_SPEC(name, package))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    work_dir = tmp_path / "run"
    assert _train(work_dir, epochs=1) == 2
    _one_line(capsys.readouterr().err, uri, "sqlalchemy", "pip install 'cncnn[mlflow]'")
    assert not work_dir.exists() and not (tmp_path / "mlflow.db").exists()


def test_a_server_that_does_not_answer_is_one_line_naming_it(tmp_path, capsys, monkeypatch, loopback):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    work_dir = tmp_path / "run"
    assert _train(work_dir, epochs=1) == 2
    _one_line(capsys.readouterr().err, uri, "server")
    assert not work_dir.exists()


# --- MLflow's recommended database store, directly and behind a real server -------------------------------------

@pytest.mark.slow
def test_a_sqlite_tracking_uri_trains_and_holds_every_epoch(tmp_path, monkeypatch):
    for package in ("sqlalchemy", "alembic"):
        pytest.importorskip(package, reason="the mlflow extra's database support")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow puts a database store's artifacts in ./mlruns of the working folder
    assert _train(tmp_path / "run", epochs=1) == 0
    _assert_tracked_as_recorded(uri, tmp_path / "run")


@pytest.fixture()
def mlflow_server(tmp_path, loopback):
    """``mlflow server`` on a free local port with a sqlite store; its URI once it answers."""
    try:
        importlib.metadata.distribution("mlflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the mlflow server is not installed (mlflow-skinny has none): pip install -e '.[test]'")
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # it migrates a fresh database first
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer: " + (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: a session of their own
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow
def test_a_real_mlflow_server_with_a_sqlite_store_holds_every_epoch_of_metrics_json(tmp_path, monkeypatch,
                                                                                   mlflow_server):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    work_dir = tmp_path / "run"
    assert _train(work_dir, "--cfg-options", "vis_backends.0.exp_name=hostile") == 0
    _assert_tracked_as_recorded(mlflow_server, work_dir, "hostile")
    client = mlflow.MlflowClient(mlflow_server)
    run = client.search_runs([client.get_experiment_by_name("hostile").experiment_id])[0]
    assert run.data.tags["best_checkpoint"] == str((work_dir / "best.safetensors").resolve())
    assert {"metrics.json", "config.py"} <= {Path(item.path).name for item in client.list_artifacts(run.info.run_id)}
