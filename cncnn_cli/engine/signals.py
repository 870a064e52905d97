"""Ctrl-C, SIGTERM and Slurm's early warning (SIGUSR1) as a request to stop cleanly at the next
iteration boundary.

The first signal sets a flag that the training hook checks after each iteration: it then
saves the resumable state and ``last.safetensors`` and ends the run with ``128 + signal``
(130, 143, 138). Clusters signal every process of a job, and launchers forward what they
receive, so one process can get the same SIGTERM (or SIGUSR1) twice: only a second Ctrl-C
means "stop now". DataLoader workers do not act on any of the three (:func:`leave_stop_signals_to_parent`,
called by :mod:`cncnn_cli.engine.loader` in each worker): the training process decides, so a
signal sent to the whole process group stops the run exactly as one sent to the training process.
"""
from __future__ import annotations

import os
import signal
import threading


#: The signals that ask a run to stop: Ctrl-C, a scheduler's or ``kill``'s SIGTERM, and the
#: warning Slurm sends ahead of a time limit with ``#SBATCH --signal=USR1@90``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def leave_stop_signals_to_parent() -> None:
    """Let this process (a DataLoader worker) outlive a stop signal sent to its whole process group.

    torch's workers die on a SIGTERM that does not come from their parent, and on SIGINT or
    SIGUSR1 by default; the training process then fails on the dead worker instead of saving.
    SIGINT and SIGUSR1 are ignored here. SIGTERM is also how the parent ends its workers (at
    exit, ``multiprocessing`` terminates the daemonic ones and waits for them), so it is blocked
    and read by a thread that exits, as torch's own handler does, only when the parent sent it.
    """
    for signum in (signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started from here on inherit it
    threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), name="cncnn-sigterm", daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass  # the job's SIGTERM: the training process got it too and decides
    os._exit(0)


class StopRequest:
    """Which signal asked the run to stop (``None`` while none did)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        self.release()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def hold(self) -> None:
        """While installed, block the stop signals in this thread until :meth:`release`.

        Held while a DataLoader may fork its workers: a worker is born with them blocked, so that
        one arriving before the worker has set up :func:`leave_stop_signals_to_parent` waits for it
        instead of killing the worker. This process still gets its own: through another of its
        threads, or here once released.
        """
        if self._previous:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def release(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGINT:  # a second Ctrl-C: stop now
            self.uninstall()
            raise KeyboardInterrupt
        # a repeated SIGTERM/SIGUSR1 (Slurm and torchrun both delivering it) changes nothing


class TrainingInterrupted(Exception):
    """Raised out of the training loop once the state is saved; carries the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
