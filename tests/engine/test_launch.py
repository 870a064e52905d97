"""Slurm's task variables become torch's, without asking scontrol."""
from __future__ import annotations

import pytest

from cncnn_cli.engine.launch import first_host, process_count, process_rank, slurm_environment
from cncnn_cli.errors import CncnnError

TASK = {"SLURM_PROCID": "11", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3", "SLURM_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456"}


@pytest.mark.parametrize(("nodelist", "first"), [
    ("gpu07", "gpu07"), ("127.0.0.1", "127.0.0.1"), ("gpu[07-08]", "gpu07"), ("gpu[03-04,07],cpu1", "gpu03"),
    ("a1,b[2-3]", "a1"), ("rack[1-2]-n[01-04]", "rack1-n01"), ("n[7]", "n7"),
])
def test_the_first_host_is_the_one_scontrol_lists_first(nodelist, first):
    assert first_host(nodelist) == first


def test_a_task_becomes_torch_variables_and_given_ones_win():
    assert slurm_environment(TASK) == {"RANK": "11", "WORLD_SIZE": "16", "LOCAL_RANK": "3", "MASTER_ADDR": "gpu07",
                                       "MASTER_PORT": str(15000 + 123456 % 20000)}
    given = slurm_environment({**TASK, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"})
    assert (given["MASTER_ADDR"], given["MASTER_PORT"]) == ("10.0.0.1", "1234")
    assert slurm_environment({k: v for k, v in TASK.items() if k != "SLURM_JOB_ID"})["MASTER_PORT"] == "29500"


def test_rank_and_count_follow_the_launcher(monkeypatch):
    for name, value in TASK.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert (process_count("slurm"), process_rank("slurm")) == (16, 11)
    assert (process_count("pytorch"), process_rank("pytorch")) == (2, 1)
    assert (process_count("none"), process_rank("none")) == (1, 0)


def test_outside_srun_the_error_names_the_missing_variables(monkeypatch):
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    with pytest.raises(CncnnError, match="SLURM_LOCALID missing.*srun"):
        slurm_environment({k: v for k, v in TASK.items() if k != "SLURM_LOCALID"})
