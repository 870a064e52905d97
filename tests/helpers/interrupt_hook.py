"""A --plugin file for tests: interrupts training at a chosen point, as a user, a cluster or a crash would."""
import os
import signal
import time
from pathlib import Path

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class InterruptAt(Hook):
    """At (epoch, iteration), 0-based: send ourselves SIGINT ('signal'), die ('crash') before that epoch,
    or ('wait') write ``marker/rank<R>`` and wait there until a signal from outside asks the run to stop.

    'wait' lets a test signal the process group at a known iteration, with the loader workers alive,
    instead of guessing with sleeps. It waits once per marker: a resumed run passes through.
    """

    def __init__(self, epoch: int, iteration: int = 0, mode: str = "signal", marker: str = "",
                 timeout: float = 300) -> None:
        self.epoch, self.iteration, self.mode = epoch, iteration, mode
        self.marker, self.timeout = marker, timeout

    def before_train_epoch(self, runner) -> None:
        if self.mode == "crash" and runner.epoch == self.epoch:
            raise KeyboardInterrupt  # a hard stop between epochs: only the saved state survives

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.epoch != self.epoch or batch_idx != self.iteration:
            return
        if self.mode == "signal":
            os.kill(os.getpid(), signal.SIGINT)
        elif self.mode == "wait":
            self._wait_for_stop(runner)

    def _wait_for_stop(self, runner) -> None:
        marker = Path(self.marker, f"rank{get_rank()}")
        if marker.exists():
            return
        stop = next(hook.stop for hook in runner.hooks if type(hook).__name__ == "StopHook")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while stop.signum is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"InterruptAt: no stop signal within {self.timeout} s")
            time.sleep(0.05)
