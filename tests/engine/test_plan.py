"""The run plan: what depends on the machine is found once, by the engine, and never written into the config."""
from __future__ import annotations

import sys

import pytest
from mmengine.config import Config

from cncnn_cli.cli.main import main
from cncnn_cli.config.resolve import resolve_config
from cncnn_cli.engine import batching
from cncnn_cli.engine.plan import prepare
from cncnn_cli.errors import CncnnError
from tests.helpers.configs import DEMO, TINY


def test_the_config_is_the_same_on_every_machine_and_the_plan_says_where_it_cannot_run(monkeypatch):
    """Two CPU processes cannot synchronize BatchNorm: the plan refuses, the config keeps what was asked."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    cfg = resolve_config("demo", {"sync_bn": True, "launcher": "pytorch", "device": "cpu"})
    assert cfg.sync_bn is True
    with pytest.raises(CncnnError, match="--sync-bn needs CUDA"):
        prepare(cfg)
    run = prepare(resolve_config("demo", {"launcher": "pytorch", "device": "cpu"}))
    assert (run.batch.processes, run.rank, run.first_rank, run.device.type) == (2, 1, False, "cpu")


def test_a_run_plans_its_batch_once_and_saves_the_users_config(tmp_path, monkeypatch, capsys):
    original, calls = batching.plan_batch, []

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    for module in list(sys.modules.values()):  # every module that imported it by name
        if getattr(module, "plan_batch", None) is original:
            monkeypatch.setattr(module, "plan_batch", counted)
    run_dir = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(run_dir), *TINY, *DEMO, "--epochs", "1", "--sync-bn"]) == 0
    assert len(calls) == 1
    assert "--sync-bn has no effect in a single process" in capsys.readouterr().err
    saved = Config.fromfile(str(run_dir / "config.py"))
    assert saved.sync_bn is True and saved.vis_backends == []  # as given: not this machine's answer
