"""A synthetic fine-grained set drawn in memory: one bird shape, classes told apart by one small mark.

Every image shows the same stylized bird (body, head, beak, wing, tail, legs) in a random
muted colour, pose, size and place, on a random cluttered background. The class is a
saturated mark of one colour at one part (``red crown``, ``blue tail``, ...): to classify,
a model has to find the bird and look at a patch of a few pixels, as in real fine-grained
tasks. Nothing is downloaded or written to disk.

Determinism: image ``index`` of ``split`` is drawn with ``numpy.random.Generator(PCG64)``
seeded by ``(seed, split, index)`` and rasterized with PIL, so it is the same on every
machine (for the same Pillow); the splits use different seeds, hence are disjoint draws.
"""
from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from cncnn_cli.errors import CncnnError
from cncnn_cli.registry import DATASETS

from cncnn_cli.data.dataset import FineGrainedDataset, check_split

SPLIT_CODES = {"train": 0, "test": 1, "val": 2}
PARTS = ("crown", "wing", "tail", "belly", "throat")
COLOURS = {
    "red": (225, 30, 30),
    "yellow": (245, 215, 20),
    "green": (30, 190, 50),
    "blue": (30, 80, 235),
    "magenta": (225, 40, 215),
}
#: Class marks in bird coordinates (bird length 1, facing +x, y down): (cx, cy, rx, ry).
MARKS = {
    "crown": (0.30, -0.23, 0.09, 0.075),
    "wing": (-0.06, -0.035, 0.15, 0.065),
    "tail": (-0.45, -0.04, 0.09, 0.10),
    "belly": (-0.02, 0.12, 0.10, 0.07),
    "throat": (0.34, -0.02, 0.08, 0.08),
}
SUPERSAMPLE = 2

Point = tuple[float, float]


def class_names(num_classes: int) -> list[str]:
    """``"<colour> <part>"`` for each class: colours vary fastest, so 10 classes = 5 colours x 2 parts."""
    return [f"{colour} {part}" for part in PARTS for colour in COLOURS][:num_classes]


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> list[Point]:
    return [(cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


def muted(rng: np.random.Generator, low: float, high: float, max_saturation: float) -> tuple[int, int, int]:
    """A random low-saturation colour, so that no background or body looks like a mark."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, max_saturation), rng.uniform(low, high))
    return (round(r * 255), round(g * 255), round(b * 255))


def draw_background(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    top, bottom = np.array(muted(rng, 0.45, 0.95, 0.35)), np.array(muted(rng, 0.35, 0.9, 0.35))
    for y in range(size):
        draw.line([(0, y), (size, y)], fill=tuple(int(c) for c in top + (bottom - top) * y / size))
    for _ in range(int(rng.integers(2, 6))):
        colour = muted(rng, 0.3, 0.9, 0.3)
        x, y = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            rx, ry = rng.uniform(0.03, 0.12, 2) * size
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)
        else:
            angle = rng.uniform(0, math.pi)
            length = rng.uniform(0.2, 0.6) * size
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line([(x, y), end], fill=colour, width=max(1, int(rng.uniform(0.01, 0.03) * size)))


def draw_bird(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, part: str, colour: tuple) -> None:
    length = rng.uniform(0.6, 0.75) * size
    angle = math.radians(rng.uniform(-15, 15))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    cx = size / 2 + rng.uniform(-1, 1) * max(size / 2 - 0.6 * length, 0)
    cy = size / 2 + rng.uniform(-1, 1) * max(size / 2 - 0.4 * length, 0)
    cos, sin = math.cos(angle), math.sin(angle)

    def place(points: list[Point]) -> list[Point]:
        return [(cx + length * (flip * x * cos - y * sin), cy + length * (flip * x * sin + y * cos)) for x, y in points]

    body = muted(rng, 0.3, 0.8, 0.4)
    wing = tuple(int(c * 0.75) for c in body)
    legs = muted(rng, 0.15, 0.4, 0.3)
    width = max(1, round(0.02 * length))
    for foot in (-0.04, 0.05):
        draw.line(place([(foot, 0.14), (foot - 0.02, 0.31)]), fill=legs, width=width)
    draw.polygon(place([(-0.25, -0.05), (-0.52, -0.15), (-0.50, 0.07), (-0.24, 0.05)]), fill=wing)
    draw.polygon(place(ellipse(0.0, 0.0, 0.30, 0.17)), fill=body)
    draw.polygon(place(ellipse(0.30, -0.12, 0.12, 0.12)), fill=body)
    draw.polygon(place([(0.40, -0.16), (0.41, -0.08), (0.55, -0.12)]), fill=legs)
    draw.polygon(place(ellipse(-0.05, -0.03, 0.19, 0.085)), fill=wing)
    draw.polygon(place(ellipse(*MARKS[part])), fill=colour)
    draw.polygon(place(ellipse(0.34, -0.15, 0.025, 0.025, n=12)), fill=(15, 15, 15))


@DATASETS.register_module(name="demo")
class Demo(FineGrainedDataset):
    """Synthetic birds told apart by one small coloured mark; generated in memory, no download.

    ``num_classes`` (2-25, default 10 = 5 colours x 2 parts), ``image_size`` (pixels,
    default 96), ``train_per_class`` / ``test_per_class`` (default 80 / 20; ``val`` has
    ``test_per_class`` too) and ``seed`` define the set; ``data_root`` is ignored.
    """

    typical_image_size = None  # generated: `cncnn data speed` measures the set itself

    name = "demo"

    def __init__(
        self,
        data_root: str = "",
        split: str = "train",
        transform: Callable | None = None,
        num_classes: int = 10,
        image_size: int = 96,
        train_per_class: int = 80,
        test_per_class: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__(transform)
        check_split(self.name, split, tuple(SPLIT_CODES))
        if not 2 <= num_classes <= len(PARTS) * len(COLOURS):
            raise CncnnError(f"demo: num_classes must be between 2 and {len(PARTS) * len(COLOURS)}")
        if image_size < 32:
            raise CncnnError("demo: image_size must be at least 32 pixels")
        self.split, self.image_size, self.seed = split, image_size, seed
        self.classes = class_names(num_classes)
        per_class = train_per_class if split == "train" else test_per_class
        self.samples = [(f"demo/{split}/{i:05d}", i % num_classes) for i in range(per_class * num_classes)]

    def load_image(self, index: int, as_tensor: bool) -> Image.Image:
        label = self.samples[index][1]
        colour_name, part = self.classes[label].split(" ")
        rng = np.random.Generator(np.random.PCG64([self.seed, SPLIT_CODES[self.split], index]))
        canvas = self.image_size * SUPERSAMPLE
        image = Image.new("RGB", (canvas, canvas))
        draw = ImageDraw.Draw(image)
        draw_background(draw, rng, canvas)
        draw_bird(draw, rng, canvas, part, COLOURS[colour_name])
        return image.resize((self.image_size, self.image_size), Image.Resampling.BOX)

    def inspect(self, index: int) -> tuple[str, tuple[int, int]]:
        return "RGB", (self.image_size, self.image_size)

