"""One training run per work dir: an advisory ``flock`` held for the whole run.

The kernel releases a ``flock`` when its process ends, however it ends, so a run killed
with ``kill -9`` never blocks the next one. The lock file names the holder (pid and
command line) for the message a second run gets. It stays when the run ends, and so marks the
folder as a cncnn work dir (``workdir.py``).
"""
from __future__ import annotations

import fcntl
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cncnn_cli.errors import CncnnError

LOCK_FILE = ".cncnn.lock"


def _command_line() -> str:
    program = Path(sys.argv[0]).name
    return shlex.join(["python -m cncnn_cli" if program == "__main__.py" else program, *sys.argv[1:]])


@contextmanager
def work_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock (creating the folder); a second holder gets a :class:`CncnnError` (exit 2)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise CncnnError(f"{run_dir} is in use by a running training run ({holder}); wait for it to end, "
                             f"or choose another --work-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {_command_line()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
