"""Atomic file writes: a crash or a full disk never leaves a broken or half-written file."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cncnn_cli.errors import CncnnError


@contextmanager
def atomic_write(path: str | Path, errors: tuple[type[BaseException], ...] = (OSError,)) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the body has written it, rename it over ``path``.

    If the body or the rename fails with one of ``errors``, the temporary file is removed, the
    previous ``path`` stays as it was, and a :class:`CncnnError` (exit 1) says so.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create 0600; keep files ordinary
        os.replace(tmp, path)
    except errors as exc:
        tmp.unlink(missing_ok=True)
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        reason = getattr(exc, "strerror", None) or exc
        raise CncnnError(f"could not write {path}: {reason}; {kept}. Free disk space or choose another folder.",
                         exit_code=1) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
