"""A --plugin file for tests: interrupts training at a chosen point, as a user or a crash would."""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class InterruptAt(Hook):
    """At (epoch, iteration), 0-based: send ourselves SIGINT ('signal') or die ('crash') before that epoch."""

    def __init__(self, epoch: int, iteration: int = 0, mode: str = "signal") -> None:
        self.epoch, self.iteration, self.mode = epoch, iteration, mode

    def before_train_epoch(self, runner) -> None:
        if self.mode == "crash" and runner.epoch == self.epoch:
            raise KeyboardInterrupt  # a hard stop between epochs: only the saved state survives

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.mode == "signal" and runner.epoch == self.epoch and batch_idx == self.iteration:
            os.kill(os.getpid(), signal.SIGINT)
