"""Paths of the wrong kind, and outputs that would replace their own inputs: one line each, exit 2.

Every command checks its path options through these before it reads or writes anything, so
that a file where a folder is expected (or the reverse) is a message naming the option, not an
``OSError`` from deep inside a library.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cncnn_cli.errors import CncnnError


def check_folder(path: str | Path, what: str) -> None:
    """A :class:`CncnnError` unless ``path`` is a folder or could be made one.

    ``what`` names the option (``--work-dir``); a missing folder is fine (it is created), but
    ``path`` itself, or a folder on the way to it, being a file is not.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CncnnError(f"{what} {path}: expected a folder, but it is a file; name a folder")
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise CncnnError(f"{what} {path}: expected a folder, but {blocking} is a file, so none can be made "
                         f"inside it; name another folder")


def check_file(path: str | Path, what: str) -> None:
    """A :class:`CncnnError` when ``path`` is a folder where a file is expected (a missing file is
    left to the command: an input then gets its own "no such file", an output is created)."""
    path = Path(path)
    if path.is_dir():
        raise CncnnError(f"{what} {path}: expected a file, but it is a folder; name a file")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same inode (hard links, symlinks), or one resolved path."""
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def refuse_own_input(output: str | Path, inputs: Iterable[str | Path], what: str) -> None:
    """A :class:`CncnnError` when writing ``output`` would replace one of the command's ``inputs``."""
    for source in inputs:
        if same_file(output, source):
            raise CncnnError(f"{what} {output} is the input {source}: writing it would replace the file it "
                             f"is made from; name another output file")


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents
