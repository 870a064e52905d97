"""A folder's exact contents, to show that a command left the user's files as they were."""
from __future__ import annotations

import os
from pathlib import Path


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` by its relative path: a file's bytes, a link's target
    (``b"-> target"``, not followed), ``None`` for a folder. Equal snapshots: nothing was added,
    removed, replaced or changed."""
    entries: dict[str, bytes | None] = {}
    for path in sorted(Path(folder).rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            entries[name] = b"-> " + os.fsencode(os.readlink(path))
        elif path.is_dir():
            entries[name] = None
        else:
            entries[name] = path.read_bytes()
    return entries
