"""The checkpoint's eval preprocessing (resize, center crop) in numpy, pixel for pixel torchvision's.

``build_transform(preprocess, train=False)`` turns a PIL image into a uint8 tensor first and then
resizes it with torch's uint8 antialiased bilinear kernel, not with Pillow's: the two differ by one
level on about 0.3 % of the pixels (Pillow keeps 22 fractional bits of each weight, torch as many as
fit in int16). :func:`resize` does torch's integer arithmetic, so the pixels are equal, not close:
the filter weights of each output pixel (a triangle as wide as the scale), normalized, rounded to
int16 at the largest precision the biggest weight allows, applied along the width and then the
height with a uint8 result after each pass.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``448`` → ``(448, 448)``; ``[h, w]`` stays (as the recipes mean them)."""
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


@lru_cache(maxsize=64)
def _weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First input index and int16-rounded weights (out_size × taps) of each output pixel, and the precision."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0  # bilinear: half-width 1, stretched by the scale when shrinking
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(math.ceil(support)) * 2 + 1
    starts = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, taps))
    for i in range(out_size):
        center = scale * (i + 0.5)
        first = max(int(center - support + 0.5), 0)
        count = min(max(min(int(center + support + 0.5), in_size) - first, 0), taps)
        w = np.clip(1.0 - np.abs((np.arange(count) + first - center + 0.5) * invscale), 0.0, None)
        total = w.sum()
        starts[i], weights[i, :count] = first, w / total if total != 0 else w
    precision = 0
    while precision < 22 and int(0.5 + weights.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    fixed = np.trunc(np.where(scaled < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
    return starts, fixed, precision


def _resize_axis(pixels: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = pixels.shape[axis]
    if in_size == out_size:
        return pixels
    starts, fixed, precision = _weights(in_size, out_size)
    moved = np.moveaxis(pixels, axis, 0)
    total = np.full((out_size, *moved.shape[1:]), 1 << (precision - 1), np.int32)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    for tap in range(fixed.shape[1]):
        total += fixed[:, tap].reshape(shape) * moved[np.minimum(starts + tap, in_size - 1)].astype(np.int32)
    return np.moveaxis(np.clip(total >> precision, 0, 255).astype(np.uint8), 0, axis)


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W×C uint8 → height×width×C, as ``torchvision``'s ``Resize(size, antialias=True)`` on a uint8 tensor."""
    height, width = size
    return _resize_axis(_resize_axis(pixels, width, 1), height, 0)


def center_crop(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W×C → the centered height×width window, as torchvision's ``CenterCrop`` (zero padding if smaller)."""
    height, width = size
    pad_h, pad_w = max(height - pixels.shape[0], 0), max(width - pixels.shape[1], 0)
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
    top = int(round((pixels.shape[0] - height) / 2.0))
    left = int(round((pixels.shape[1] - width) / 2.0))
    return pixels[top:top + height, left:left + width]


def eval_pixels(image: Image.Image, preprocess: dict) -> np.ndarray:
    """An RGB PIL image → the uint8 3×H×W array the checkpoint's eval transform makes of it."""
    pixels = resize(np.asarray(image, dtype=np.uint8), size_pair(preprocess["resize"]))
    return np.ascontiguousarray(center_crop(pixels, size_pair(preprocess["crop"])).transpose(2, 0, 1))
