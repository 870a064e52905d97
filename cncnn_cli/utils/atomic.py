"""Atomic file writes: a crash or a full disk never leaves a broken or half-written file."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cncnn_cli.errors import CncnnError, first_line


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
        raise write_error(path, exc) from None


def write_error(path: Path, exc: BaseException, instead: str = "choose another folder") -> CncnnError:
    """The one line (exit 1) for a file the disk refused: which file, why, that nothing changed, what to do.

    Called after the partial file is gone, so ``path`` existing means an earlier file is still there.
    """
    reason = getattr(exc, "strerror", None) or first_line(exc)
    kept = " (an earlier file there is intact)" if path.exists() else ""
    return CncnnError(f"could not write {path}: {reason}; nothing was written{kept}. Free disk space or {instead}.",
                      exit_code=1)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
