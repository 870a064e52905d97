"""Hooks that own the work directory and what people see while a run trains.

``WorkDirHook`` writes ``last.safetensors`` and the resumable ``state.pth`` after every
epoch, ``best.safetensors`` when top-1 on the selection split (test, or a validation set)
improves, and ``metrics.json``, including the final test of the best checkpoint when a
validation set chose it; it stops the run on a non-finite loss. ``StopHook`` has it save, then
stops, on Ctrl-C/SIGTERM. ``ResumeCheckHook`` refuses a state that does not continue the run
being resumed. ``ConsoleHook`` draws a rich progress bar on a terminal and plain lines
otherwise. They write on rank 0 only, but every rank joins the decisions to stop.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from mmengine.dist import barrier, is_distributed, is_main_process
from mmengine.hooks import Hook, RuntimeInfoHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.weights.checkpoint import Checkpoint, load_weights, read_checkpoint, save_checkpoint
from cncnn_cli.engine.signals import StopRequest, TrainingInterrupted
from cncnn_cli.engine.state import plain_message_hub, restore_rng_state, rng_state
from cncnn_cli.errors import CncnnError

STATE_FILE = "state.pth"


class NonFiniteLoss(CncnnError):
    """The loss became NaN or infinite; the previous checkpoints are kept."""


def write_json_atomic(path: Path, document: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")


def learning_rates(runner) -> tuple[float, float]:
    """(new modules' lr, backbone lr): the largest and smallest of the parameter groups."""
    rates = [group["lr"] for group in runner.optim_wrapper.optimizer.param_groups]
    return max(rates), min(rates)


@HOOKS.register_module()
class WorkDirHook(Hook):
    """What a run leaves in its work directory: checkpoints, resumable state and metrics.json;
    it stops the run when the loss it records is not finite.

    Kept instead of mmengine's ``CheckpointHook``: that one writes pickled ``.pth`` files, while
    cncnn's checkpoints are self-describing safetensors and its state loads weights-only.
    """

    priority = "VERY_LOW"  # after ParamSchedulerHook: the saved schedulers are already stepped

    def __init__(self, checkpoint_info: Callable[[], Checkpoint], run_info: dict, resuming: bool,
                 selected_on: str = "test", interval: int = 10) -> None:
        self.checkpoint_info = checkpoint_info
        self.selected_on = selected_on
        #: Iterations between read-backs of the loss: each waits for the GPU to finish its queued work.
        self.interval = interval
        self._checked_iters = 0
        self.run_info = run_info
        self.resuming = resuming
        self.metrics: dict = {}
        self._epoch_loss = 0.0
        self._epoch_images = 0
        self._epoch_skipped = 0
        self._epoch_iters = 0
        self._epoch_start = 0.0

    # ---------------------------------------------------------------- set-up
    def before_train(self, runner) -> None:
        self.work_dir = Path(runner.work_dir)
        previous = self.work_dir / "metrics.json"
        if self.resuming and previous.is_file():
            self.metrics = json.loads(previous.read_text())
        self.metrics.setdefault("history", [])
        self.metrics.setdefault("last", None)
        self.metrics.setdefault("best", None)
        self.metrics.setdefault("skipped_images", 0)
        self.metrics.update(self.run_info)
        self.metrics.setdefault("test_at_best_val", None)

    def before_train_epoch(self, runner) -> None:
        self._epoch_loss, self._epoch_images, self._epoch_skipped, self._epoch_iters = 0.0, 0, 0, 0
        self._checked_iters = 0
        self._epoch_start = time.perf_counter()
        self._epoch_lrs = learning_rates(runner)  # the schedulers step at the epoch's end

    # ------------------------------------------------------------ iterations
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = outputs.get("loss") if outputs else None
        if loss is not None:
            self._epoch_loss = self._epoch_loss + _detached(loss)  # stays on the device: no sync
            self._epoch_iters += 1
        if data_batch is not None:
            self._epoch_images += len(data_batch["data_samples"])
            self._epoch_skipped += int(data_batch.get("skipped", 0))
        if (batch_idx + 1) % self.interval == 0 or batch_idx + 1 == len(runner.train_dataloader):
            self._epoch_loss_value(runner)

    def save_mid_epoch(self, runner, consumed: int) -> None:
        """Save the state and ``last.safetensors`` of a run stopped after this iteration; the sampler
        resumes after the ``consumed`` samples of this rank's epoch."""
        self._epoch_loss_value(runner)  # never save a diverged model
        self._save_state(runner, meta={"epoch": runner.epoch, "iter": runner.iter + 1}, skip=consumed)
        self._save_weights(runner, "last.safetensors")

    def _epoch_loss_value(self, runner) -> float:
        """The epoch's summed loss, read back from the device; stops the run if it is not finite.

        A non-finite loss keeps the sum non-finite, so checking at every read-back (every
        ``interval`` iterations, and before anything is saved) catches it without a sync per step.
        Under DDP the ranks agree on it (every rank reads back at the same iterations): a rank
        that stopped alone would leave the others waiting in the next gradient all-reduce.
        """
        value = float(self._epoch_loss)
        if _on_any_rank(not math.isfinite(value)):
            where = value if not math.isfinite(value) else "non-finite on another process"
            saved = [str(self.work_dir / name) for name in ("last.safetensors", STATE_FILE)
                     if (self.work_dir / name).is_file()]
            kept = (f"{' and '.join(saved)} hold epoch {runner.epoch}, the last good one" if saved
                    else "no epoch had finished, so there is nothing saved to resume")
            raise NonFiniteLoss(
                f"the loss became {where} at epoch {runner.epoch + 1}, within iterations {self._checked_iters + 1}–"
                f"{self._epoch_iters}; stopped without saving: {kept}. Lower the learning rate (--lr) or try "
                f"without --amp.", exit_code=1)
        self._checked_iters = self._epoch_iters
        return value

    # ---------------------------------------------------------------- epochs
    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1
        elapsed = max(time.perf_counter() - self._epoch_start, 1e-9)
        if is_distributed():  # every rank's images and skips, once per epoch
            counts = torch.tensor([self._epoch_images, self._epoch_skipped], dtype=torch.float64,
                                  device=_dist_device())
            dist.all_reduce(counts)
            self._epoch_images, self._epoch_skipped = (int(value) for value in counts.tolist())
        lr, backbone_lr = self._epoch_lrs
        entry = {
            "epoch": epoch,
            "loss": self._epoch_loss_value(runner) / max(self._epoch_iters, 1),
            "lr": lr,
            "backbone_lr": backbone_lr,
            "train_images_per_s": self._epoch_images / elapsed,
            "skipped_images": self._epoch_skipped,
        }
        if self._epoch_skipped:
            runner.logger.warning(f"epoch {epoch}: skipped {self._epoch_skipped} unreadable image(s); "
                                  f"the warnings above name them")
        self.metrics["skipped_images"] += self._epoch_skipped
        self.metrics["history"] = [h for h in self.metrics["history"] if h["epoch"] < epoch] + [entry]
        self._save_weights(runner, "last.safetensors")
        self._save_state(runner, meta={"epoch": epoch, "iter": runner.iter}, skip=0)
        self._write_metrics()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not metrics or runner.train_loop is None:
            return
        epoch = runner.train_loop.epoch  # already advanced past the trained epoch
        result = {"epoch": epoch, "split": self.selected_on, **_rounded(metrics)}
        for entry in self.metrics["history"]:
            if entry["epoch"] == epoch:
                entry.update(result)
        self.metrics["last"] = result
        best = self.metrics.get("best")
        if best is None or result["top1"] > best["top1"]:
            self.metrics["best"] = {**result, "selected_on": self.selected_on}
            self._save_weights(runner, "best.safetensors", extra={"epoch": epoch, "top1": result["top1"],
                                                                  "selected_on": self.selected_on})
        self._write_metrics()

    # ------------------------------------------------- final test (val-selected)
    @property
    def needs_final_test(self) -> bool:
        return self.selected_on == "val" and self.metrics.get("best") is not None

    def before_test(self, runner) -> None:
        """The test split is evaluated once, on the checkpoint the validation set chose."""
        barrier()  # rank 0 may still be writing best.safetensors
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        _, state = read_checkpoint(self.work_dir / "best.safetensors")
        load_weights(model, state, self.work_dir / "best.safetensors")

    def after_test_epoch(self, runner, metrics=None) -> None:
        if metrics:
            self.metrics["test_at_best_val"] = {"epoch": self.metrics["best"]["epoch"], "split": "test",
                                                **_rounded(metrics)}
            self._write_metrics()

    # --------------------------------------------------------------- writing
    def _write_metrics(self) -> None:
        if is_main_process():
            write_json_atomic(self.work_dir / "metrics.json", self.metrics)

    def _save_weights(self, runner, name: str, extra: dict | None = None) -> None:
        if not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        info = self.checkpoint_info()
        info.extra = {**info.extra, **(extra or {})}
        save_checkpoint(self.work_dir / name, model.state_dict(), info)

    def _save_state(self, runner, meta: dict, skip: int) -> None:
        self._pending_skip = skip
        if not is_main_process():
            return
        # torch.save reports a full disk as a RuntimeError from its zip writer
        with atomic_write(self.work_dir / STATE_FILE, errors=(OSError, RuntimeError)) as tmp:
            runner.save_checkpoint(str(tmp.parent), tmp.name, meta=meta)

    # ------------------------------------------------------ resumable state
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["message_hub"] = plain_message_hub(checkpoint["message_hub"])
        checkpoint["meta"] = {k: v for k, v in checkpoint["meta"].items() if k != "dataset_meta"}
        checkpoint["cncnn"] = {"rng": rng_state(), "sampler_skip": getattr(self, "_pending_skip", 0),
                               "max_epochs": runner.max_epochs, "batch": self.run_info["batch"],
                               "selection": self.run_info["selection"], "config": resumed_config(runner.cfg)}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore what the state holds beyond mmengine's (checked first by :class:`ResumeCheckHook`)."""
        state = checkpoint["cncnn"]
        restore_rng_state(state["rng"])
        skip = int(state["sampler_skip"])
        if not skip:
            # Iterations count batches: restate the finished epochs in this run's batches, so that a
            # run can go on with another --batch-size/--accumulate of the same effective batch.
            checkpoint["meta"]["iter"] = checkpoint["meta"]["epoch"] * len(runner.train_dataloader)
        runner.train_dataloader.sampler.skip = skip


@HOOKS.register_module()
class StopHook(Hook):
    """Stops the run on Ctrl-C/SIGTERM/SIGUSR1, once ``WorkDirHook`` has saved what resumes it.

    A signal only notes the request (:class:`StopRequest`); the run stops at the next optimizer
    step (no half-accumulated gradient is lost) or validation/test batch, by raising
    :class:`TrainingInterrupted`. Every rank stops at the same step.
    """

    priority = 95  # after WorkDirHook (VERY_LOW, 90) has counted the iteration it saves, before LOWEST

    def __init__(self, stop: StopRequest, work_dir_hook: WorkDirHook, batch_size: int, accumulate: int = 1,
                 interval: int = 10) -> None:
        self.stop = stop
        self.work_dir_hook = work_dir_hook
        self.batch_size = batch_size
        self.accumulate = accumulate
        #: Steps between agreements to stop under DDP: each waits for the GPU to finish its queued work.
        self.interval = interval

    def before_train_epoch(self, runner) -> None:
        """Until the first batch arrives the loader may be forking its workers: they are born with the
        stop signals held, so that a signal to the whole job cannot kill one before it is set up."""
        self.stop.hold()

    before_val_epoch = before_test_epoch = before_train_epoch

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.stop.release()

    before_val_iter = before_test_iter = before_train_iter

    def after_train_epoch(self, runner) -> None:
        self.stop.release()  # also after an epoch without a batch

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.stop.release()

    after_test_epoch = after_val_epoch

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if (batch_idx + 1) % self.accumulate == 0 and self._stop_agreed((batch_idx + 1) // self.accumulate):
            self.work_dir_hook.save_mid_epoch(runner, consumed=(batch_idx + 1) * self.batch_size)
            raise TrainingInterrupted(self.stop.signum or 2)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._stop_agreed(batch_idx + 1):  # the epoch's state was saved before validation began
            raise TrainingInterrupted(self.stop.signum or 2)

    after_test_iter = after_val_iter  # the final test runs after the last state was saved

    def _stop_agreed(self, step: int) -> bool:
        """Whether to stop now. Under DDP every rank must stop at the same step, so the ranks agree
        through an all-reduce, and reading its result waits for the GPU: done every ``interval``
        steps only (a Ctrl-C then takes effect within ``interval`` steps)."""
        flag = self.stop.signum is not None
        if is_distributed():
            if step % self.interval:
                return False
            flag = _on_any_rank(flag)
            if flag and self.stop.signum is None:
                self.stop.signum = 2
        return flag


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Refuses a state that does not continue this run, before the model or optimizer loads it."""

    priority = "VERY_HIGH"  # before any other hook reads the loaded state

    def __init__(self, batch: dict, selection: dict) -> None:
        #: This run's batch plan (``BatchPlan.to_dict()``) and checkpoint selection, as the state saves them.
        self.batch = batch
        self.selection = selection

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("cncnn")
        if state is None:
            raise CncnnError("the state file was not written by cncnn train; cannot resume from it")
        if state["max_epochs"] != runner.max_epochs:
            raise CncnnError(
                f"this run's schedule was built for {state['max_epochs']} epochs; resuming with "
                f"{runner.max_epochs} would not stretch the cosine schedule. Resume with --epochs "
                f"{state['max_epochs']} (or start a new run).")
        self._check_same_run(state, runner)
        saved, now = state.get("batch"), self.batch
        if int(state["sampler_skip"]) and saved and \
                (saved["per_device"], saved["processes"]) != (now["per_device"], now["processes"]):
            raise CncnnError(
                f"this run stopped mid-epoch at --batch-size {saved['per_device']} on {saved['processes']} "
                f"process(es); resume it that way (another batch size can take over at an epoch's end)")

    def _check_same_run(self, state: dict, runner) -> None:
        """A resumed run keeps its model and optimizer (checked before either loads its state), its
        effective batch (the optimizer's saved learning rates follow from it) and the images that
        choose its checkpoint."""
        if "config" in state:
            differs = first_difference(state["config"], resumed_config(runner.cfg))
            if differs is not None:
                key, saved_value, value = differs
                raise CncnnError(
                    f"this run was trained with {key} = {saved_value!r}, not {value!r}: its saved state does not fit "
                    f"that. Resume with the run's own settings (its config.py), or start a new run in another "
                    f"--work-dir")
        saved, now = state.get("batch"), self.batch
        if saved and saved["effective"] != now["effective"]:
            raise CncnnError(
                f"this run trains with an effective batch of {saved['effective']} ({saved['per_device']} per device "
                f"× {saved['processes']} process(es) × accumulate {saved['accumulate']}), and its learning rates "
                f"follow from it; resume with flags giving {saved['effective']} again, e.g. --batch-size "
                f"{now['per_device']} --effective-batch {saved['effective']}")
        if state.get("selection", self.selection) != self.selection:
            raise CncnnError(f"this run chooses its checkpoint with {state['selection']}; resume with the same "
                             f"--val-fraction/--val-split (or start a new run)")


#: Config keys a resumed run may change: the state replaces the pretrained weights, and the
#: memory layout follows the device (a run may go on on another device).
_FREE_ON_RESUME = ("model.backbone.pretrained", "model.data_preprocessor")


def resumed_config(cfg) -> dict:
    """The sections of a run's config its saved state depends on: the model and the optimizer."""
    return {key: cfg[key].to_dict() for key in ("model", "optim_wrapper")}


def first_difference(saved, now, key: str = "") -> tuple[str, object, object] | None:
    """The first dotted key whose value differs between two nested configs, with both values
    (``None`` for a key that one side lacks); ``None`` when they are the same."""
    if key in _FREE_ON_RESUME:
        return None
    if isinstance(saved, dict) and isinstance(now, dict):
        for name in [*saved, *(name for name in now if name not in saved)]:
            found = first_difference(saved.get(name), now.get(name), f"{key}.{name}" if key else str(name))
            if found is not None:
                return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(now, (list, tuple)) and len(saved) == len(now):
        for index, (a, b) in enumerate(zip(saved, now)):
            found = first_difference(a, b, f"{key}.{index}")
            if found is not None:
                return found
        return None
    return None if saved == now else (key, saved, now)


def _detached(value) -> torch.Tensor | float:
    """A step's output kept where it is: a tensor stays on its device (reading it would sync)."""
    return value.detach() if isinstance(value, torch.Tensor) else float(value)


@HOOKS.register_module()
class DeferredRuntimeInfoHook(RuntimeInfoHook):
    """mmengine's ``RuntimeInfoHook``, but the step outputs reach the message hub every ``interval``
    iterations (and at an epoch's end), all in one device→host copy.

    mmengine's own turns every logged loss into a Python number after every iteration, and each
    such ``.item()`` waits for the GPU to finish everything queued. ``LoggerHook`` reads the hub
    only at those same iterations, and the values arrive in iteration order, so logs and their
    window averages are unchanged.
    """

    def __init__(self, interval: int = 10) -> None:
        self.interval = interval
        self._pending: list[dict] = []

    def before_train_epoch(self, runner) -> None:
        super().before_train_epoch(runner)
        self._pending = []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs is not None:
            self._pending.append({key: _detached(value) for key, value in outputs.items()})
        if (batch_idx + 1) % self.interval == 0 or batch_idx + 1 == len(runner.train_dataloader):
            self._flush(runner)

    def _flush(self, runner) -> None:
        tensors = [v for outputs in self._pending for v in outputs.values() if isinstance(v, torch.Tensor)]
        numbers = iter(torch.stack([t.double().reshape(()) for t in tensors]).tolist() if tensors else [])
        for outputs in self._pending:
            for key, value in outputs.items():
                runner.message_hub.update_scalar(f"train/{key}", next(numbers) if isinstance(value, torch.Tensor)
                                                 else value)
        self._pending = []


def _on_any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds here or, under DDP, on any rank (one all-reduce; every rank must call it)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([float(flag)], device=_dist_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _dist_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _retrieval(metrics: dict) -> str:
    """``  R@1 … MAP@R …`` of a ``retrieval=True`` evaluation, else nothing."""
    if "retrieval_recall_at_1" not in metrics:
        return ""
    return f"  R@1 {metrics['retrieval_recall_at_1']:.2f}  MAP@R {metrics['retrieval_map_at_r']:.2f}"


def _rounded(metrics: dict) -> dict:
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in metrics.items()}


@HOOKS.register_module()
class ConsoleHook(Hook):
    """Rank 0's view of training on stderr: a rich progress bar on a terminal, plain lines otherwise."""

    priority = "LOW"

    def __init__(self, interval: int = 10) -> None:
        self.interval = interval
        self.console = Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None

    def before_train(self, runner) -> None:
        if not is_main_process():
            return
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[ips]:.1f} img/s"),
                TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()

    def before_train_epoch(self, runner) -> None:
        self._start = time.perf_counter()
        self._images = 0
        self._loss_sum, self._loss_n, self._loss = 0.0, 0, 0.0
        if self.progress is not None:
            self.task = self.progress.add_task(
                "train", total=len(runner.train_dataloader), epoch=f"{runner.epoch + 1}/{runner.max_epochs}",
                loss=0.0, lr=learning_rates(runner)[0], ips=0.0)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not is_main_process():
            return
        self._images += len(data_batch["data_samples"]) if data_batch is not None else 0
        if outputs and "loss" in outputs:
            self._loss_sum = self._loss_sum + _detached(outputs["loss"])
            self._loss_n += 1
        ips = self._images / max(time.perf_counter() - self._start, 1e-9)
        lr = learning_rates(runner)[0]
        due = (batch_idx + 1) % self.interval == 0 or batch_idx + 1 == len(runner.train_dataloader)
        if due:  # the loss is read back from the device only here: the bar shows the last reading
            self._loss = float(self._loss_sum) / max(self._loss_n, 1)
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=self._loss, lr=lr, ips=ips)
        elif due:
            self.console.print(f"epoch {runner.epoch + 1}/{runner.max_epochs} iter {batch_idx + 1}/"
                               f"{len(runner.train_dataloader)} loss {self._loss:.4f} lr {lr:.2e} {ips:.1f} img/s",
                               highlight=False, soft_wrap=True)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if is_main_process() and metrics:
            heads = " ".join(f"{k.removesuffix('_top1')} {v:.2f}" for k, v in metrics.items() if k.endswith("_top1"))
            self.console.print(f"epoch {runner.train_loop.epoch}: top-1 {metrics['top1']:.2f}  "
                               f"top-5 {metrics['top5']:.2f}  ({heads}){_retrieval(metrics)}",
                               highlight=False, soft_wrap=True)

    def after_test_epoch(self, runner, metrics=None) -> None:
        if is_main_process() and metrics:
            self.console.print(f"test split, once, at the checkpoint chosen on val: top-1 {metrics['top1']:.2f}  "
                               f"top-5 {metrics['top5']:.2f}{_retrieval(metrics)}", highlight=False, soft_wrap=True)

    def after_train(self, runner) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
