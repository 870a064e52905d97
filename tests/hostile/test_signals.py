"""Stop signals as clusters send them.

Slurm, ``scancel`` and a terminal send their signal to every process of a job or a process group,
the DataLoader workers included, and torchrun forwards what it receives to ranks that may have
received it already. Each case must end as a signal to the training process alone does: the state
saved, the resume command printed, exit 128 + signal; and the resumed run must end with the
weights of a run that was never interrupted.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from cncnn_cli.cli.main import main
from cncnn_cli.engine.loader import worker_init
from cncnn_cli.engine.signals import StopRequest
from tests.helpers.configs import DEMO, TINY

HELPERS = Path(__file__).parents[1] / "helpers"
#: Two epochs of the tiny demo with two persistent loader workers per loader (the last --workers wins).
RUN = [*TINY, *DEMO, "--workers", "2", "--epochs", "2", "--seed", "3"]


def _wait_hook(marker: Path) -> list[str]:
    """Flags that make the run wait in epoch 2, after its 2nd iteration, until a signal arrives."""
    hook = f"{{'type': 'InterruptAt', 'epoch': 1, 'iteration': 1, 'mode': 'wait', 'marker': '{marker}'}}"
    return ["--plugin", str(HELPERS / "interrupt_hook.py"), "--cfg-options", f"custom_hooks=[{hook}]"]


def _start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """``command`` as the leader of a new session and process group, as a batch job runs."""
    with open(log, "w") as err:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=log.parent, env=env,
                                start_new_session=True)


def _wait_for(markers: list[Path], process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 600
    while not all(marker.exists() for marker in markers):
        assert process.poll() is None, f"the run ended before the marker:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the run never reached the marker"
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants: the processes Slurm signals in a job step."""
    return [pid, *(member for child in _children(pid) for member in _tree(child))]


def _resume_command(err: str) -> list[str]:
    lines = err.splitlines()
    line = lines[lines.index(next(line for line in lines if line.endswith("Resume with:"))) + 1]
    command = shlex.split(line)
    assert command[:2] == ["cncnn", "train"] and "--resume" in command
    return command[1:]


def _assert_same_weights(resumed: Path, straight: Path) -> None:
    ours, theirs = load_file(str(resumed / "last.safetensors")), load_file(str(straight / "last.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6, msg=key)
    assert [entry["epoch"] for entry in json.loads((resumed / "metrics.json").read_text())["history"]] == [1, 2]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", "demo", "--work-dir", str(work), *RUN]) == 0
    return work


def test_a_repeated_sigterm_waits_for_the_save_and_a_second_ctrl_c_stops_at_once():
    """Slurm signals every process and torchrun forwards its own copy: a rank gets SIGTERM twice."""
    stop = StopRequest()
    stop.install()
    try:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGUSR1)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.uninstall()


def _slow_worker_init(worker_id: int, ready: Path, go: Path) -> None:
    """cncnn's worker set-up, after a pause in which the test signals the newborn worker."""
    (tmp := ready.with_suffix(".tmp")).write_text(str(os.getpid()))
    tmp.rename(ready)
    while not go.exists():
        time.sleep(0.01)
    worker_init(worker_id, num_workers=1, rank=0, seed=0)


def test_a_sigterm_to_a_worker_before_it_is_set_up_does_not_kill_it(tmp_path):
    """The job's SIGTERM can reach a loader worker between its fork and its set-up: the training hook
    holds the stop signals while the loader forks, so the worker is born with them blocked."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    loader = DataLoader(range(4), batch_size=2, num_workers=1, worker_init_fn=partial(_slow_worker_init, ready=ready,
                                                                                       go=go))
    stop = StopRequest()
    stop.install()
    try:
        stop.hold()  # as the training hook does before each epoch's first batch
        batches = iter(loader)
    finally:
        stop.uninstall()
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.01)
    worker = int(ready.read_text())
    subprocess.run([sys.executable, "-c", f"import os, signal; os.kill({worker}, signal.SIGTERM)"], check=True)
    go.touch()
    assert [batch.tolist() for batch in batches] == [[0, 1], [2, 3]]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)],
                         ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_to_the_process_group_saves_and_resumes_to_the_straight_run(tmp_path, straight, signum, code):
    """A scheduler's SIGTERM, or Slurm's early warning (--signal=USR1@90), reaches the loader workers too."""
    work, markers, log = tmp_path / "run", tmp_path / "markers", tmp_path / "train.err"
    process = _start([sys.executable, "-m", "cncnn_cli", "train", "demo", "--work-dir", str(work), *RUN,
                      *_wait_hook(markers)], log)
    try:
        _wait_for([markers / "rank0"], process, log)
        assert len(_children(process.pid)) >= 2  # the loader workers are alive, in the signalled group
        os.killpg(process.pid, signum)
        assert process.wait(timeout=600) == code, log.read_text()[-3000:]
    finally:
        process.kill()
    err = log.read_text()
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert f"interrupted: saved {work}/state.pth and last.safetensors" in err
    assert main(_resume_command(err)) == 0  # the printed command, as the user would paste it
    _assert_same_weights(work, straight)


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_then_a_sigterm_still_saves(tmp_path):
    """A terminal's Ctrl-C goes to the foreground process group (the training process and its workers);
    a SIGTERM while the run saves (a supervisor, ``timeout``, the scheduler) must not cut the save short."""
    work, markers, log = tmp_path / "run", tmp_path / "markers", tmp_path / "train.err"
    process = _start([sys.executable, "-m", "cncnn_cli", "train", "demo", "--work-dir", str(work), *RUN,
                      *_wait_hook(markers)], log)
    try:
        _wait_for([markers / "rank0"], process, log)
        os.killpg(process.pid, signal.SIGINT)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=600) == 130, log.read_text()[-3000:]
    finally:
        process.kill()
    err = log.read_text()
    assert "Traceback" not in err and "--resume" in err
    state = torch.load(work / "state.pth", map_location="cpu", weights_only=True)
    assert state["meta"]["epoch"] == 1 and state["cncnn"]["sampler_skip"] == 2 * 8  # mid-epoch 2, after 2 batches


@pytest.mark.slow
def test_sigterm_to_every_process_of_a_torchrun_job_saves_and_resumes(tmp_path):
    """As Slurm ends a job step: torchrun, both ranks and their loader workers each get SIGTERM, and
    torchrun forwards its own to the ranks (which run in sessions of their own) as well."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    work, markers, log = tmp_path / "ddp", tmp_path / "markers", tmp_path / "train.err"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cncnn_cli",
                "train", "demo", "--work-dir", str(work), "--launcher", "pytorch", "--device", "cpu", *TINY, *DEMO,
                "--workers", "1", "--epochs", "2", "--batch-size", "4"]
    process = _start([*torchrun, *_wait_hook(markers)], log, env=env)
    try:
        _wait_for([markers / "rank0", markers / "rank1"], process, log)
        job = _tree(process.pid)
        assert len(job) >= 5  # torchrun, 2 ranks, their workers
        for pid in job:
            os.kill(pid, signal.SIGTERM)
        process.wait(timeout=600)  # torchrun's own exit status reports the signal it got
    finally:
        process.kill()
    err = log.read_text()
    assert err.count("Resume with:") == 1 and "KeyboardInterrupt" not in err and "DataLoader worker" not in err
    state = torch.load(work / "state.pth", map_location="cpu", weights_only=True)
    assert state["meta"]["epoch"] == 1 and state["cncnn"]["sampler_skip"] == 2 * 4  # per rank: 2 batches of 4
    resumed = subprocess.run([*torchrun, "--resume"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                             env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [entry["epoch"] for entry in json.loads((work / "metrics.json").read_text())["history"]] == [1, 2]
