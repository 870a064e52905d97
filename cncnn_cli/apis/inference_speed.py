"""``cncnn benchmark --inference``: CPU inference speed of a checkpoint and its exported files, one table.

Each runtime is measured in a process of its own (``sys.executable``), on the same seeded random
uint8 images at the checkpoint's crop size and with the same number of threads, so that its peak
resident memory is its own (an onnxruntime process never imports torch) and no runtime warms caches
for the next. Latency is per batch; the
images per second come from the median batch.

The torch.compile row is always there: measured (its compilation is an untimed first call), or
``available: false`` with the reason when the compiler cannot run here, so that a missing
toolchain costs one row, not the table. Given a labelled set, each runtime's child process also
reports its top-1 on those images, after its speed and memory were read, through the same
eval preprocessing (the checkpoint's, which its ONNX files carry in their metadata).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cncnn_cli.deploy.onnx_runtime import OnnxModel
from cncnn_cli.deploy.preprocess import size_pair
from cncnn_cli.errors import CncnnError

if TYPE_CHECKING:
    from cncnn_cli.weights.checkpoint import Checkpoint

#: Batch sizes measured unless one is given.
BATCH_SIZES = (1, 8)
CHILD = "import sys; from cncnn_cli.apis.inference_speed import _child; _child(sys.argv[1])"


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_inference_benchmark(checkpoint: str | Path, onnx_files: list[Path] | None = None,
                            batch_sizes: tuple[int, ...] = BATCH_SIZES, threads: int | None = None, steps: int = 5,
                            warmup: int = 1, dataset: str | None = None, data_root: str | None = None,
                            split: str = "test", limit: int | None = None) -> list[dict]:
    """One row per runtime and batch size: torch eager fp32, torch bf16 autocast, torch.compile, then each ONNX file.

    ``ratio`` is a row's images per second over torch eager fp32's at the same batch size, in this run.
    With ``dataset`` or ``data_root`` (the checkpoint's dataset with either over it, as ``eval``), the
    first ``limit`` images of ``split`` give each row ``top1`` (percent) and ``top1_change`` (points
    against torch eager fp32); the set is measured once per runtime, at the first batch size.
    """
    from cncnn_cli.weights.checkpoint import read_checkpoint  # here: an ONNX child process never imports torch

    threads = threads or default_threads()
    info, _ = read_checkpoint(checkpoint)
    crop = size_pair(info.preprocess["crop"])
    labelled = None
    if dataset or data_root:
        labelled = {**_labelled_set(checkpoint, info, dataset, data_root, split), "split": split, "limit": limit}
    runtimes = [{"runtime": "torch eager fp32", "kind": "torch", "bf16": False, "path": str(checkpoint)},
                {"runtime": "torch bf16 autocast", "kind": "torch", "bf16": True, "path": str(checkpoint)},
                {"runtime": "torch.compile fp32", "kind": "torch", "bf16": False, "compile": True,
                 "path": str(checkpoint)}]
    for file in onnx_files or []:
        model = OnnxModel(file)
        if model.crop != crop:
            raise CncnnError(f"--onnx {file} takes {model.crop[0]}×{model.crop[1]} images but {checkpoint} "
                             f"{crop[0]}×{crop[1]}: compare the files exported from this checkpoint")
        precision = "int8" if "quantization" in model.metadata else "fp32"
        runtimes.append({"runtime": f"onnxruntime {precision} ({Path(file).name})", "kind": "onnx", "path": str(file)})
    rows, top1 = [], {}
    for batch in batch_sizes:
        measured = [_in_child({**runtime, "batch": batch, "threads": threads, "steps": steps, "warmup": warmup,
                               "labelled": labelled if batch == batch_sizes[0] else None})
                    for runtime in runtimes]
        for row in measured:
            row["ratio"] = row["images_per_s"] / measured[0]["images_per_s"] if row["available"] else None
            if labelled:
                top1.setdefault(row["runtime"], row.pop("top1", None))
                row["top1"] = top1[row["runtime"]]
                row["top1_change"] = None if row["top1"] is None else row["top1"] - top1[runtimes[0]["runtime"]]
        rows += measured
    return rows


def _labelled_set(checkpoint: str | Path, info: "Checkpoint", dataset: str | None, data_root: str | None,
                  split: str) -> dict:
    """The dataset config to measure top-1 on, checked here (a one-line error) before any child runs."""
    from cncnn_cli.data.dataset import build_dataset
    from cncnn_cli.evaluation.evaluate import _dataset_config, _where

    config = _dataset_config(checkpoint, dict(info.dataset or {}), dataset, data_root)
    options = dict(config)
    data = build_dataset(options.pop("type"), options.pop("data_root"), split, **options)
    if len(data.classes) != len(info.classes):
        raise CncnnError(f"{checkpoint} predicts {len(info.classes)} classes but {_where(config)} has "
                         f"{len(data.classes)}; give --dataset/--data-root of the set it was trained for")
    if len(data) == 0:
        raise CncnnError(f"--split {split}: {_where(config)} has no images in it; pick a split that has")
    return {"dataset": config}


def _top1(spec: dict, preprocess: dict, forward: Callable[[np.ndarray], Any]) -> float:
    """Percent of the labelled set's first ``limit`` images whose argmax ``forward`` gets right."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from cncnn_cli.data.collate import collate
    from cncnn_cli.data.dataset import build_dataset
    from cncnn_cli.data.transforms import build_transform

    labelled = spec["labelled"]
    options = dict(labelled["dataset"])
    data = build_dataset(options.pop("type"), options.pop("data_root"), labelled["split"],
                         build_transform(preprocess, False), **options)
    if labelled["limit"]:
        data = Subset(data, range(min(labelled["limit"], len(data))))
    right = seen = 0
    for batch in DataLoader(data, batch_size=spec["batch"], num_workers=0, collate_fn=collate):
        if batch["inputs"].shape[0]:
            right += int((torch.as_tensor(forward(batch["inputs"].numpy())).argmax(1) == batch["data_samples"]).sum())
            seen += batch["inputs"].shape[0]
    if not seen:
        raise CncnnError(f"no readable images in {labelled['dataset']['type']} split '{labelled['split']}'")
    return 100 * right / seen


def _in_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["it exited with code %d" % done.returncode])[-1]
        raise CncnnError(f"benchmark of {spec['runtime']} at batch {spec['batch']} failed: {last}", exit_code=1)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(spec_json: str) -> None:
    """Measure one runtime (in its own process) and print its row as one JSON line."""
    spec = json.loads(spec_json)
    row = {"runtime": spec["runtime"], "batch": spec["batch"], "threads": spec["threads"]}
    if spec["kind"] == "onnx":
        model = OnnxModel(spec["path"], spec["threads"])
        size, step, preprocess = model.crop, model.run, model.preprocess
    else:
        import torch

        from cncnn_cli.apis.inference import Predictor
        from cncnn_cli.registry import load_plugins

        load_plugins()
        torch.set_num_threads(spec["threads"])
        predictor = Predictor.from_checkpoint(spec["path"], device="cpu")
        preprocess = predictor.info.preprocess
        size = size_pair(preprocess["crop"])

        def step(images: np.ndarray) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["bf16"]):
                return predictor.forward(torch.from_numpy(images))["logits"].float()

    images = np.random.default_rng(0).integers(0, 256, (spec["batch"], 3, *size), dtype=np.uint8)
    if spec.get("compile"):
        from cncnn_cli.models.compile import compile_model

        try:
            compile_model(predictor.model, predictor.device)
            step(images)  # compiles: untimed, whatever --warmup says
        except CncnnError as error:
            print(json.dumps({**row, "available": False, "reason": str(error), "images_per_s": None,
                              "p50_ms": None, "p95_ms": None, "peak_rss_mib": None}))
            return
    for _ in range(spec["warmup"]):
        step(images)
    seconds = []
    for _ in range(spec["steps"]):
        started = time.perf_counter()
        step(images)
        seconds.append(time.perf_counter() - started)
    row.update(available=True, images_per_s=spec["batch"] / float(np.median(seconds)),
               p50_ms=1000 * float(np.percentile(seconds, 50)), p95_ms=1000 * float(np.percentile(seconds, 95)),
               peak_rss_mib=peak_rss_mib())  # before the labelled set: a torch import there is not the runtime's
    if spec["labelled"]:
        row["top1"] = _top1(spec, preprocess, step)
    print(json.dumps(row))


def peak_rss_mib() -> float:
    """This process's peak resident memory: Linux's VmHWM, which, unlike ``ru_maxrss``, does not carry
    over the parent's peak into a child process that was forked and then exec'd."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
