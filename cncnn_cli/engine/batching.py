"""The paper's total batch on any hardware: per-device batch × processes × accumulation.

The recipes' learning rates are set for one total batch (16 in the paper). A run whose
effective batch differs has its learning rates scaled linearly (mmengine's auto-scale-lr)
unless the user turns that off; either way the numbers are said, not silently applied.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from mmengine.config import Config

from cncnn_cli.engine import launch
from cncnn_cli.errors import CncnnError


@dataclass(frozen=True)
class BatchPlan:
    per_device: int
    processes: int
    accumulate: int
    #: The total batch the recipe's learning rates were set for.
    recipe: int
    scale_lr: bool

    @property
    def effective(self) -> int:
        return self.per_device * self.processes * self.accumulate

    @property
    def lr_scale(self) -> float:
        return self.effective / self.recipe if self.scale_lr else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "effective": self.effective, "lr_scale": self.lr_scale}


def process_count(cfg: Config) -> int:
    """Processes taking part in training: torchrun's WORLD_SIZE or srun's SLURM_NTASKS (launch.py)."""
    return launch.process_count(cfg.launcher)


def plan_batch(cfg: Config, processes: int | None = None) -> BatchPlan:
    """Resolve ``--accumulate`` / ``--effective-batch`` against the per-device batch and processes."""
    processes = process_count(cfg) if processes is None else processes
    accumulate = cfg.accumulate
    if cfg.effective_batch:
        step = cfg.batch_size * processes
        if cfg.effective_batch % step:
            raise CncnnError(
                f"--effective-batch {cfg.effective_batch} is not a multiple of --batch-size {cfg.batch_size} "
                f"× {processes} process(es) = {step}; pick a per-device batch that divides it, e.g. "
                f"--batch-size {_largest_divisor(cfg.effective_batch // processes, cfg.batch_size)}")
        accumulate = cfg.effective_batch // step
    scale = cfg.auto_scale_lr
    return BatchPlan(cfg.batch_size, processes, accumulate, int(scale["base_batch_size"]), bool(scale["enable"]))


def _largest_divisor(total: int, at_most: int) -> int:
    return max((d for d in range(1, min(total, at_most) + 1) if total % d == 0), default=1)


def mmengine_auto_scale_lr(plan: BatchPlan) -> dict:
    """The Runner's ``auto_scale_lr``. mmengine counts processes × per-device batch but not
    accumulation steps, so the base it is given is divided by the accumulation."""
    return dict(enable=plan.scale_lr and plan.effective != plan.recipe,
                base_batch_size=plan.recipe / plan.accumulate)


def describe(plan: BatchPlan, lr: float) -> str | None:
    """One line for the log when the effective batch is not the recipe's (None when it is)."""
    if plan.effective == plan.recipe:
        return None
    parts = f"{plan.per_device} per device × {plan.processes} process(es) × accumulate {plan.accumulate}"
    if not plan.scale_lr:
        return (f"effective batch {plan.effective} ({parts}) differs from the {plan.recipe} the recipe's "
                f"learning rates were set for; they are kept as given (--no-scale-lr)")
    return (f"effective batch {plan.effective} ({parts}) differs from the {plan.recipe} the recipe's learning "
            f"rates were set for: every learning rate is scaled by {plan.lr_scale:g} (lr {lr:g} → "
            f"{lr * plan.lr_scale:g}; backbone alike). Keep them with --no-scale-lr, or reach {plan.recipe} "
            f"with --effective-batch {plan.recipe}")


def smaller_batches(plan: BatchPlan) -> list[tuple[int, int]]:
    """(per-device batch, accumulation) pairs below the current batch with the same effective batch.

    At least two images per device: BatchNorm cannot train on one."""
    options = []
    batch, accumulate = plan.per_device, plan.accumulate
    while batch % 2 == 0 and batch >= 4 and len(options) < 2:
        batch, accumulate = batch // 2, accumulate * 2
        options.append((batch, accumulate))
    return options
