"""Decode + augment throughput of one loader worker, to size ``--workers`` against the model.

A DataLoader worker runs single-threaded (torch sets one thread per worker), so the figure
is measured with one torch thread: workers needed ≈ model images/s ÷ this figure
(:func:`bottleneck`).
"""
from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.data.gpu_decode import EncodedBatch, JpegBytes
from cncnn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from cncnn_cli.utils.progress import progress


def write_synthetic_jpegs(folder: Path, count: int = 32, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """An ImageFolder of photo-sized JPEGs (smooth gradients, shapes and grain, like CUB's ~500×375)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    for index in range(count):
        for split in ("train", "test"):
            base = rng.uniform(0, 255, 3) + rng.uniform(-1, 1, 3) * (x[..., None] / width * 120)
            base = base + rng.uniform(-1, 1, 3) * (y[..., None] / height * 120)
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, 150)
            base[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            path = folder / split / f"class_{index % 4}" / f"{index:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, quality=90)
    return folder


def loader_throughput(dataset_cfg: dict, image_size: int = 448, seconds: float = 5.0, train: bool = True,
                      show_progress: bool = False, preprocess: dict | None = None,
                      gpu_decode: bool = False) -> dict:
    """Images per second that one single-threaded worker decodes and augments (uint8 output).

    ``preprocess`` is a recipe's (``resize``, ``crop``); without it, crop ``image_size`` after a
    resize of ``image_size`` × 512/448. The dataset's own fix-ups run too (a real Aircraft copy's
    banner crop; synthetic ImageFolder JPEGs have none, a view of no cost). With ``gpu_decode``
    the worker only reads files (:class:`~cncnn_cli.data.gpu_decode.JpegBytes`), and
    :func:`device_decode_throughput` measures the device's side.
    """
    preprocess = preprocess or {"resize": round(image_size * 512 / 448), "crop": image_size}
    resize, crop = preprocess["resize"], preprocess["crop"]
    transform = build_transform({"resize": resize, "crop": crop, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                                train=train)
    options = dict(dataset_cfg)
    dataset = build_dataset(options.pop("type"), options.pop("data_root", None), "train", transform, **options)
    if gpu_decode:
        dataset = JpegBytes(dataset, preprocess, train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[0]  # warm-up: first-call costs are not per-image costs
        images, start = 0, time.perf_counter()
        with progress("decoding and augmenting", unit="images", enabled=show_progress) as bar:
            for index in itertools.cycle(range(len(dataset))):
                dataset[index]
                images += 1
                bar.advance()
                if time.perf_counter() - start >= seconds:
                    break
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    result = {"dataset": dataset_cfg["type"], "images": images, "seconds": round(elapsed, 3),
              "resize": resize, "crop": crop, "train_transform": train, "gpu_decode": gpu_decode,
              "images_per_s_per_worker": round(images / elapsed, 1)}
    if gpu_decode:
        result.update(device_decode_throughput(dataset, seconds=seconds))
    return result


def device_decode_throughput(dataset: JpegBytes, batch_size: int = 32, seconds: float = 5.0,
                             device: torch.device | None = None) -> dict:
    """Images per second the device decodes, resizes and crops (``gpu_decode``'s other half), in batches.

    CUDA when there is one (timed with a synchronize after each batch), else the CPU with all its threads.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = collate([dataset[index % len(dataset)] for index in range(batch_size)])["inputs"]
    if not isinstance(batch, EncodedBatch):  # the dataset's images are not plain JPEG files
        return {"device": str(device), "device_images_per_s": None}

    def step() -> None:
        batch.decode(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up: nvJPEG's handles, the first resize kernels
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or not images:
        step()
        images += len(batch)
    return {"device": str(device), "device_images_per_s": round(images / (time.perf_counter() - start), 1)}


def bottleneck(per_worker: float, workers: int, model_images_per_s: float) -> dict:
    """Whether ``workers`` loader processes feed a model that trains ``model_images_per_s``, and how many would.

    Workers scale about linearly while there are free cores (each is one process on one
    core); ``workers=0`` loads in the main process, at about one worker's rate, in turn with
    the model rather than beside it.
    """
    loader = per_worker * max(workers, 1)
    return {"model_images_per_s": model_images_per_s, "workers": workers,
            "loader_images_per_s": round(loader, 1),
            "bottleneck": "loader" if loader < model_images_per_s else "model",
            "workers_needed": max(1, math.ceil(model_images_per_s / per_worker))}
