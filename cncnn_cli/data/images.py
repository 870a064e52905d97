"""Reading any image file a user is likely to have as 8-bit RGB.

CUB holds grayscale JPEGs; users bring CMYK, RGBA, palette, 16-bit PNGs and phone
photos with EXIF orientation. Everything becomes a 3-channel uint8 RGB image.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.utils.textio import output_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(CncnnError):
    """An image file that cannot be decoded."""


class SkippedEntryWarning(UserWarning):
    """A folder walk skipped an entry: a symlink loop, a dangling link, a FIFO, socket or device, or one
    that cannot be read."""


class ImageMetadataWarning(UserWarning):
    """PIL read an image's pixels but warned about its metadata (a damaged EXIF block)."""


def shown(path: str | Path) -> str:
    """A path as messages and outputs write it (bytes of a name that are not UTF-8 as ``\\xNN``)."""
    return output_text(str(path))


def read_image_file(path: str | Path) -> bytes:
    """The bytes of the image file ``path``, which must be a regular file.

    Anything else is refused before it is opened, with :class:`ImageReadError` saying what it is:
    opening a FIFO blocks until something writes to it, and a device file may never end.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageReadError(_unusable(path, exc)) from None
    if not stat.S_ISREG(mode):
        raise ImageReadError(f"{shown(path)}: {_kind(mode)}, not an image file")
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ImageReadError(_unusable(path, exc)) from None


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def _unusable(path: str | Path, exc: OSError) -> str:
    """Why ``path`` cannot be used, from the error of a stat, open or listing."""
    if exc.errno == errno.ELOOP:
        return f"{shown(path)}: a symbolic link loop"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
        return f"{shown(path)}: a symbolic link to {shown(os.readlink(path))}, which does not exist"
    if exc.errno == errno.ENOENT:
        return f"{shown(path)}: no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{shown(path)}: permission denied"
    return f"{shown(path)}: cannot be read ({exc.strerror or first_line(exc)})"


#: Warnings given so far: each is given once per process. (Python's own once-per-text registry is
#: reset by every ``catch_warnings``, which :func:`_metadata_warnings` uses.)
_warned: set[str] = set()


def _warn_once(message: str, category: type[UserWarning]) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, category, stacklevel=3)


def _skip(message: str) -> None:
    _warn_once(f"skipping {message}", SkippedEntryWarning)


def list_folder(folder: str | Path, suffixes: tuple[str, ...] | None = None) -> list[tuple[Path, os.stat_result]]:
    """The usable entries of ``folder`` in name order, each with its ``os.stat`` (links followed).

    Usable: folders, and readable regular files whose suffix is one of ``suffixes`` (any suffix when
    ``None``; other regular files are left out silently). Every other entry (a symlink loop, a dangling
    link, a FIFO, socket or device file, a file or folder without read permission) is skipped with one
    :class:`SkippedEntryWarning` naming it. Raises :class:`ImageReadError` when ``folder`` itself cannot
    be listed. Every walk of the user's folders goes through here.
    """
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise ImageReadError(_unusable(folder, exc)) from None
    usable = []
    for entry in entries:
        try:
            info = entry.stat()
        except OSError as exc:
            _skip(_unusable(entry.path, exc))
            continue
        if stat.S_ISDIR(info.st_mode):
            if not os.access(entry.path, os.R_OK | os.X_OK):
                _skip(f"{shown(entry.path)}: permission denied")
                continue
        elif not stat.S_ISREG(info.st_mode):
            _skip(f"{shown(entry.path)}: {_kind(info.st_mode)}, not an image file or folder")
            continue
        elif suffixes is not None and os.path.splitext(entry.name)[1].lower() not in suffixes:
            continue
        elif not os.access(entry.path, os.R_OK):
            _skip(f"{shown(entry.path)}: permission denied")
            continue
        usable.append((Path(entry.path), info))
    return usable


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB (EXIF orientation applied)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float grayscale: scale the full range into 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "F":
            high = 1.0 if array.max() <= 1.0 else float(array.max())
        array = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white, as a viewer shows it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


#: ``catch_warnings`` changes process-wide state: one thread at a time (``data check`` reads in threads).
_warnings_lock = threading.Lock()


def _new_warnings_lock() -> None:
    global _warnings_lock
    _warnings_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_warnings_lock)  # loader workers never inherit it held


@contextmanager
def _metadata_warnings(path: Path) -> Iterator[None]:
    """Turn PIL's warnings about damaged metadata into one :class:`ImageMetadataWarning` line naming the file.

    PIL warns about a corrupt EXIF block in Python's two-line format, sometimes several times per
    file, without naming it. Held only around header parsing and EXIF orientation, never a decode;
    warnings other threads raise meanwhile are passed on unchanged.
    """
    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    from_pil = [w for w in caught if issubclass(w.category, UserWarning) and "PIL" in Path(w.filename).parts]
    for w in caught:
        if w not in from_pil:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if from_pil:
        _warn_once(f"{shown(path)}: damaged image metadata ignored ({first_line(from_pil[0].message)})",
                   ImageMetadataWarning)


#: ``None``: PIL's own decompression-bomb guard (it refuses images over twice
#: ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 megapixels); else the largest pixel count accepted.
_max_pixels: int | None = None


def set_max_pixels(limit: int | None) -> None:
    """Accept images of up to ``limit`` pixels (``None``: PIL's default guard).

    For datasets of legitimately huge images (slides, satellite scenes). The limit replaces
    PIL's guard for this process; loader workers forked later inherit it.
    """
    global _max_pixels
    if limit is not None and limit <= 0:
        raise CncnnError(f"max_pixels must be a positive number of pixels, got {limit}")
    _max_pixels = limit
    Image.MAX_IMAGE_PIXELS = None if limit is not None else _PIL_DEFAULT_MAX_PIXELS


_PIL_DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def open_checked(path: Path, data: bytes | None = None) -> Image.Image:
    """``Image.open`` (lazy: the header only) that refuses images over the pixel limit.

    ``data``: the file's bytes when the caller has read them already (named by ``path``).
    """
    try:
        with _metadata_warnings(path):
            image = Image.open(path if data is None else io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused as too large ({exc}). If the image is legitimate, raise the "
                             f"limit with max_pixels (`--max-pixels N`, or the recipe key max_pixels)") from None
    if _max_pixels is not None and image.width * image.height > _max_pixels:
        image.close()
        raise ImageReadError(f"{path}: {image.width}×{image.height} = {image.width * image.height:,} pixels, more "
                             f"than max_pixels {_max_pixels:,}; raise max_pixels to read it")
    return image


def load_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and convert one image; raise :class:`ImageReadError` naming the file.

    Any failure of the decoder is reported the same way: malformed files make PIL's plugins
    raise many kinds of exceptions, and one bad file must never end a command.
    """
    path = Path(path)
    data = read_image_file(path)
    try:
        with open_checked(path, data) as image:
            image.load()  # force the decode so truncated files fail here, not later
            with _metadata_warnings(path):
                return to_rgb(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{shown(path)}: not an image file PIL can read") from None
    except MemoryError:
        raise ImageReadError(f"{shown(path)}: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise ImageReadError(f"{shown(path)}: cannot decode image ({type(exc).__name__}: {exc})") from None


def is_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder (links followed); ``False`` where it cannot be looked at, unlike
    ``Path.is_dir``, which raises for a path inside a folder without permission."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def find_images(path: str | Path, named: bool = True) -> list[Path]:
    """A file as itself; a directory walked recursively for image files, sorted."""
    return list(iter_images(path, named))


def iter_images(path: str | Path, named: bool = True) -> Iterator[Path]:
    """:func:`find_images` one path at a time: a folder of any size is walked lazily.

    Each folder's entries are visited in name order, subfolders where their names fall, which
    is the order of sorting all the paths (paths compare part by part). Links to folders are
    followed unless they lead back into a folder being walked. Entries that are not folders or
    readable regular files are skipped with a warning each (:func:`list_folder`); a path that is
    not a folder is yielded as it is, for its reader to refuse (:func:`read_image_file`).

    A ``path`` that is a folder which cannot be listed raises :class:`ImageReadError` when
    ``named`` (the user gave it), else it is skipped with a warning like the entries inside it.
    """
    path = Path(path)
    if not is_folder(path):
        yield path
        return
    try:
        top = os.stat(path)
        entries = list_folder(path, IMAGE_SUFFIXES)
    except (OSError, ImageReadError) as exc:
        message = _unusable(path, exc) if isinstance(exc, OSError) else str(exc)
        if named:
            raise ImageReadError(message) from None
        _skip(message)
        return
    yield from _walk(entries, ((top.st_dev, top.st_ino),))


def _walk(entries: list[tuple[Path, os.stat_result]], ancestors: tuple[tuple[int, int], ...]) -> Iterator[Path]:
    for entry, info in entries:
        if not stat.S_ISDIR(info.st_mode):
            yield entry
            continue
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            _skip(f"{shown(entry)}: a symbolic link loop (it leads back to a folder that holds it)")
            continue
        try:
            inside = list_folder(entry, IMAGE_SUFFIXES)
        except ImageReadError as exc:
            _skip(str(exc))
            continue
        yield from _walk(inside, (*ancestors, key))
