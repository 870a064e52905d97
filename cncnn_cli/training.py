"""One training run in a work dir, as ``cncnn train`` and ``cncnn ablate`` start it."""
from __future__ import annotations

import contextlib
import json
import sys
import shlex
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import is_main_process

from cncnn_cli.commands.common import err_console
from cncnn_cli.engine.hooks import STATE_FILE
from cncnn_cli.engine.runner import build_runner, resume_path
from cncnn_cli.engine.signals import StopRequest, TrainingInterrupted
from cncnn_cli.errors import CncnnError


def is_finished(run_dir: Path, epochs: int) -> bool:
    """A run whose metrics.json records its last epoch."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    history = json.loads(metrics.read_text()).get("history", [])
    return bool(history) and history[-1]["epoch"] >= epochs and (run_dir / "best.safetensors").is_file()


def run_training(cfg: Config, run_dir: Path, resume: str | None, resume_command: list[str]) -> int:
    """Train; returns 0, or 128 + signal after a clean interruption (state saved, resume command printed).

    ``resume_command`` is the cncnn command line that continues the run.
    """
    state = resume_path(run_dir, resume)
    if state is None and (run_dir / STATE_FILE).exists():
        raise CncnnError(f"{run_dir} already holds a run. Continue it with --resume, pick another --work-dir, "
                         f"or delete the folder to start over.")
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        cfg.dump(str(run_dir / "config.py"))
    stop = StopRequest()
    stop.install()
    try:
        # stdout stays clean: mmengine print()s some notices (e.g. checkpoint loading) there.
        with contextlib.redirect_stdout(sys.stderr):
            runner = build_runner(cfg, run_dir, state, stop)
            runner.train()
    except TrainingInterrupted as exc:
        if is_main_process():
            err_console.print(f"interrupted: saved {run_dir}/{STATE_FILE} and last.safetensors. Resume with:\n"
                              f"  cncnn {shlex.join(resume_command)}", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    finally:
        stop.uninstall()
    if is_main_process():
        summarize(run_dir)
    return 0


def summarize(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best, last = metrics.get("best"), metrics.get("last")
    if best and last:
        err_console.print(f"best top-1 {best['top1']:.2f} at epoch {best['epoch']} (selected on {best['selected_on']}); "
                          f"last epoch top-1 {last['top1']:.2f}", highlight=False, soft_wrap=True)
    err_console.print(f"wrote {run_dir}/best.safetensors, last.safetensors, metrics.json", highlight=False,
                      markup=False, soft_wrap=True)
