"""What a training run writes into its work dir, and the rule that keeps it off the user's files.

A folder holding :data:`~cncnn_cli.engine.lock.LOCK_FILE` is one that cncnn made or already
claimed: the lock is its run marker, written before anything else. Any other folder existing
already is the user's, and a run starts in it only when none of :data:`RUN_FILES` is there, so
that cncnn never replaces a file it did not write.
"""
from __future__ import annotations

import os
from pathlib import Path

from cncnn_cli.engine.hooks import STATE_FILE
from cncnn_cli.engine.lock import LOCK_FILE
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.paths import check_folder

CONFIG_FILE = "config.py"
METRICS_FILE = "metrics.json"
#: Every file a run writes at the top of its work dir (besides the lock); its logs and tracker
#: files go into a new folder named after the run's start time.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, "best.safetensors", "last.safetensors", STATE_FILE)


def check_work_dir(run_dir: Path) -> None:
    """Refuse, touching nothing, a work dir that cannot hold a run: a file, a folder inside a file,
    or a folder cncnn did not make that holds a file a run would write."""
    check_folder(run_dir, "the work dir")
    if not run_dir.is_dir() or (run_dir / LOCK_FILE).exists():
        return
    taken = [name for name in RUN_FILES if os.path.lexists(run_dir / name)]  # a dangling link too
    if taken:
        raise CncnnError(
            f"the work dir {run_dir} already holds {', '.join(taken)}, which cncnn did not write (the folder "
            f"has no {LOCK_FILE}), and a run would replace {'them' if len(taken) > 1 else 'it'}; choose a new "
            f"or empty --work-dir")
