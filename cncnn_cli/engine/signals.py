"""Ctrl-C and SIGTERM as a request to stop cleanly at the next iteration boundary.

The first signal sets a flag that the training hook checks after each iteration: it then
saves the resumable state and ``last.safetensors`` and ends the run. A second signal
interrupts at once. Loader workers forked after ``install`` inherit the handler, so they
do not die on Ctrl-C in the middle of a batch.
"""
from __future__ import annotations

import signal


class StopRequest:
    """Which signal asked the run to stop (``None`` while none did)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # second signal: stop now
            self.uninstall()
            raise KeyboardInterrupt
        self.signum = signum


class TrainingInterrupted(Exception):
    """Raised out of the training loop once the state is saved; carries the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
