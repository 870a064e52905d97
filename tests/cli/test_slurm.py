"""``--launcher slurm``: a one-task gloo run with the variables srun sets, as a subprocess."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from cncnn_cli.cli.main import main
from cncnn_cli.weights.checkpoint import read_checkpoint
from tests.helpers.configs import DEMO, TINY

#: A hook that records the process group training ran in.
GROUP_PLUGIN = """
import json, os
from pathlib import Path

import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordProcessGroup(Hook):
    def before_train(self, runner):
        group = {"backend": dist.get_backend(), "world": dist.get_world_size(), "rank": dist.get_rank(),
                 "wrapper": type(runner.model).__name__, "master": os.environ["MASTER_ADDR"]}
        Path(runner.work_dir, "group.json").write_text(json.dumps(group))
"""

#: What a distributed launcher may have left in the environment: the run must get them from Slurm's.
TORCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def _free_port() -> int:
    with socket.socket() as sock:  # bind, not connect: no traffic
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_one_slurm_task_trains_over_gloo(tmp_path):
    plugin = tmp_path / "group_plugin.py"
    plugin.write_text(GROUP_PLUGIN)
    env = {k: v for k, v in os.environ.items() if k not in TORCH_VARIABLES and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_LOCALID="0", SLURM_NODELIST="127.0.0.1",
               SLURM_JOB_ID="4242", MASTER_PORT=str(_free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "cncnn_cli", "train", "demo", "--work-dir", str(tmp_path / "run"), "--launcher", "slurm",
         "--device", "cpu", *TINY, *DEMO, "--epochs", "1", "--plugin", str(plugin),
         "--cfg-options", "custom_hooks=[{'type': 'RecordProcessGroup'}]"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    read_checkpoint(tmp_path / "run" / "best.safetensors")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["batch"]["processes"] == 1
    group = json.loads((tmp_path / "run" / "group.json").read_text())
    assert group == {"backend": "gloo", "world": 1, "rank": 0, "wrapper": "MMDistributedDataParallel",
                     "master": "127.0.0.1"}


def test_slurm_outside_srun_is_one_line_before_any_work_dir(tmp_path, capsys, monkeypatch):
    for name in [name for name in os.environ if name.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    work_dir = tmp_path / "work"
    assert main(["train", "demo", "--work-dir", str(work_dir), *TINY, "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --launcher slurm needs the variables srun sets") and "\n" not in err
    assert not work_dir.exists()
