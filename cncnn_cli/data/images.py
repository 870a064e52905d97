"""Reading any image file a user is likely to have as 8-bit RGB.

CUB holds grayscale JPEGs; users bring CMYK, RGBA, palette, 16-bit PNGs and phone
photos with EXIF orientation. Everything becomes a 3-channel uint8 RGB image.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cncnn_cli.errors import CncnnError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(CncnnError):
    """An image file that cannot be decoded."""


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
    try:
        with open_checked(path) as image:
            image.load()  # force the decode so truncated files fail here, not later
            return to_rgb(image)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file PIL can read") from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None


def find_images(path: str | Path) -> list[Path]:
    """A file as itself; a directory walked recursively for image files, sorted."""
    return list(iter_images(path))


def iter_images(path: str | Path) -> Iterator[Path]:
    """:func:`find_images` one path at a time: a folder of any size is walked lazily.

    Each folder's entries are visited in name order, subfolders where their names fall, which
    is the order of sorting all the paths (paths compare part by part).
    """
    path = Path(path)
    if not path.is_dir():
        yield path
        return
    with os.scandir(path) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from iter_images(entry.path)
        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            yield Path(entry.path)
