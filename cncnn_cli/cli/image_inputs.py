"""The images a command is given: files, folders walked lazily, ``-`` for paths on stdin.

``predict`` and ``embed`` read their inputs the same way; torch-free, so the ONNX path stays light.
"""
from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from cncnn_cli.errors import CncnnError


def refuse_only_empty_folders(inputs: list[Path]) -> None:
    """Stop at once, exit 2, when every input is a folder without images: there is nothing to do.
    (An empty folder among other inputs is an error entry in its place instead, like a missing file.)"""
    from cncnn_cli.data.images import is_folder

    if inputs and all(path != Path("-") and is_folder(path) for path in inputs) \
            and not any(_has_images(path) for path in inputs):
        raise CncnnError(_no_images(inputs))


def _has_images(folder: Path) -> bool:
    """Whether walking ``folder`` finds an image; a folder that cannot be listed counts (as its error entry)."""
    from cncnn_cli.data.images import ImageReadError, iter_images

    try:
        return next(iter_images(folder), None) is not None
    except ImageReadError:
        return True


def _no_images(folders: list[Path]) -> str:
    from cncnn_cli.data.images import IMAGE_SUFFIXES

    return (f"{', '.join(map(str, folders))}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, "
            f"in subfolders too)")


def walk_inputs(inputs: Iterable[Path]) -> Iterator:
    """Every image path, lazily: folders walked as they are reached, ``-`` read from stdin line by line;
    an empty folder becomes an error entry (a ``Prediction``) in its place."""
    from cncnn_cli.data.images import ImageReadError, is_folder, iter_images
    from cncnn_cli.deploy.predictions import Prediction

    for path in inputs:
        if path == Path("-"):
            if isinstance(sys.stdin, io.TextIOWrapper):  # names that are not UTF-8 come through as they are
                sys.stdin.reconfigure(errors="surrogateescape")
            yield from (Path(line.rstrip("\r\n")) for line in sys.stdin if line.strip())
        elif is_folder(path):
            found = False
            try:
                for image in iter_images(path):
                    found = True
                    yield image
            except ImageReadError as exc:  # the folder cannot be listed: its error entry
                yield Prediction(image=str(path), error=str(exc))
                continue
            if not found:  # an error entry in its place, like a missing file's
                yield Prediction(image=str(path), error=_no_images([path]))
        else:
            yield from iter_images(path)
