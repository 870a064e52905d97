"""One training run in a work dir, as ``cncnn train`` and ``cncnn ablate`` start it."""
from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from mmengine.config import Config

from cncnn_cli.utils.console import say
from cncnn_cli.engine.batching import smaller_batches
from cncnn_cli.engine.hooks import STATE_FILE, WorkDirHook
from cncnn_cli.engine.lock import work_dir_lock
from cncnn_cli.engine.mmengine_compat import visualizer_open
from cncnn_cli.engine.plan import RunPlan
from cncnn_cli.engine.runner import build_runner, resume_path
from cncnn_cli.engine.signals import StopRequest, TrainingInterrupted
from cncnn_cli.engine.trackers import check_trackers_start
from cncnn_cli.engine.workdir import CONFIG_FILE, check_work_dir
from cncnn_cli.errors import CncnnError


def is_finished(run_dir: Path, epochs: int) -> bool:
    """A run whose metrics.json records its last epoch."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    document = json.loads(metrics.read_text())
    history = document.get("history", [])
    if not history or history[-1]["epoch"] < epochs or not (run_dir / "best.safetensors").is_file():
        return False
    chosen_on_val = (document.get("best") or {}).get("selected_on") == "val"
    return not chosen_on_val or document.get("test_at_best_val") is not None  # val runs end with the test


def run_training(cfg: Config, run: RunPlan, run_dir: Path, resume: str | None, resume_command: list[str]) -> int:
    """Train; returns 0, or 128 + signal after a clean interruption (state saved, resume command printed).

    ``run`` is the config's plan on this machine (:func:`~cncnn_cli.engine.plan.prepare`, called
    before this). ``resume_command`` is the cncnn command line that continues the run. The run holds the work
    dir's lock throughout (rank 0 for all ranks of a DDP run); a work dir this call created is
    removed again if the run fails before it starts training (bad data, bad options). A folder
    cncnn did not make is refused, before anything is written, if it holds a file the run writes.
    """
    first_rank = run.first_rank
    if first_rank:
        check_work_dir(run_dir)
        check_trackers_start(run.trackers)  # mmengine starts them on rank 0 only
    created = _first_missing(run_dir)
    progress = _Progress()
    if not first_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
    with work_dir_lock(run_dir) if first_rank else contextlib.nullcontext():
        try:
            return _train_in(cfg, run, run_dir, resume, resume_command, progress)
        except BaseException:
            if created and first_rank and not progress.started:
                shutil.rmtree(created, ignore_errors=True)
            raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (``None`` if ``path`` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


@dataclass
class _Progress:
    #: Set once the first epoch begins: from then on the work dir holds the run.
    started: bool = False


def _train_in(cfg: Config, run: RunPlan, run_dir: Path, resume: str | None, resume_command: list[str],
              progress: _Progress) -> int:
    state = resume_path(run_dir, resume)
    if state is None and (run_dir / STATE_FILE).exists():
        raise CncnnError(f"{run_dir} already holds a run. Continue it with --resume, pick another --work-dir, "
                         f"or delete the folder to start over.")
    if run.first_rank and (state is None or not (run_dir / CONFIG_FILE).exists()):
        cfg.dump(str(run_dir / CONFIG_FILE))  # a resumed run keeps the config it started with
    stop = StopRequest()
    stop.install()
    try:
        # stdout stays clean: mmengine print()s some notices (e.g. checkpoint loading) there.
        with contextlib.redirect_stdout(sys.stderr):
            runner = build_runner(cfg, run, run_dir, state, stop)
            progress.started = True
            with visualizer_open(runner):
                runner.train()
                if work_dir_hook(runner).needs_final_test:
                    runner.test()
    except TrainingInterrupted as exc:
        if run.first_rank:
            say(f"interrupted: saved {run_dir}/{STATE_FILE} and last.safetensors. Resume with:\n"
                f"  cncnn {shlex.join(resume_command)}")
        return exc.exit_code
    except torch.cuda.OutOfMemoryError as exc:
        raise CncnnError(out_of_memory_message(run, run_dir, str(exc)), exit_code=1) from None
    finally:
        stop.uninstall()
    if run.first_rank:
        summarize(run_dir)
    return 0


def work_dir_hook(runner) -> WorkDirHook:
    return next(hook for hook in runner.hooks if isinstance(hook, WorkDirHook))


def out_of_memory_message(run: RunPlan, run_dir: Path, error: str = "") -> str:
    """One message for a CUDA out-of-memory error: the batch, the memory, and flags that fit.

    The peak is mmengine's since its last log line (its log processor resets it each time); the
    request that failed comes from torch's own message (``Tried to allocate 2.00 GiB``).
    """
    plan = run.batch
    requested = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", error)
    wanted = f", {requested.group(1)} more requested" if requested else ""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory
        peak = (f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB allocated{wanted}, of "
                f"{total / 2**30:.1f} GiB on {torch.cuda.get_device_name(device)}")
    else:
        peak = f"peak memory unknown{wanted}"
    fits = [f"--batch-size {batch} --accumulate {accumulate}" for batch, accumulate in smaller_batches(plan)]
    advice = (f"keep the effective batch of {plan.effective} with {' or '.join(fits)}"
              if fits else "lower --image-size")
    kept = (f"{run_dir}/last.safetensors and {STATE_FILE} hold the last finished epoch; add --resume to those "
            f"flags to go on from there" if (run_dir / STATE_FILE).is_file()
            else "No epoch had finished, so nothing was saved")
    hint = "" if run.amp_dtype else "; --amp also roughly halves activation memory"
    return (f"out of GPU memory at --batch-size {plan.per_device} per device ({peak}). To fit, {advice}{hint}. "
            f"{kept}.")


def summarize(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best, last, tested = metrics.get("best"), metrics.get("last"), metrics.get("test_at_best_val")
    if best and last and tested:
        say(f"val top-1: best {best['top1']:.2f} at epoch {best['epoch']}, last epoch "
            f"{last['top1']:.2f}. Test top-1 of the checkpoint chosen on val (quote this): {tested['top1']:.2f}")
    elif best and last:
        say(f"test top-1: last epoch {last['top1']:.2f}; best {best['top1']:.2f} at epoch "
            f"{best['epoch']} (chosen on the test split, as in the paper - an optimistic number; "
            f"--val-fraction chooses without looking at test)")
    say(f"wrote {run_dir}/best.safetensors, last.safetensors, metrics.json")
