"""``cncnn benchmark --inference``: CPU inference speed of a checkpoint and its exported files, one table.

Each runtime is measured in a process of its own (``sys.executable``), on the same seeded random
uint8 images at the checkpoint's crop size and with the same number of threads, so that its peak
resident memory is its own (an onnxruntime process never imports torch) and no runtime warms caches
for the next. Latency is per batch; the
images per second come from the median batch.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cncnn_cli.deploy.onnx_runtime import OnnxModel
from cncnn_cli.deploy.preprocess import size_pair
from cncnn_cli.errors import CncnnError

#: Batch sizes measured unless one is given.
BATCH_SIZES = (1, 8)
CHILD = "import sys; from cncnn_cli.apis.inference_speed import _child; _child(sys.argv[1])"


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_inference_benchmark(checkpoint: str | Path, onnx_files: list[Path] | None = None,
                            batch_sizes: tuple[int, ...] = BATCH_SIZES, threads: int | None = None, steps: int = 5,
                            warmup: int = 1) -> list[dict]:
    """One row per runtime and batch size: torch eager fp32, torch bf16 autocast, then each ONNX file.

    ``ratio`` is a row's images per second over torch eager fp32's at the same batch size, in this run.
    """
    from cncnn_cli.weights.checkpoint import read_checkpoint  # here: an ONNX child process never imports torch

    threads = threads or default_threads()
    info, _ = read_checkpoint(checkpoint)
    crop = size_pair(info.preprocess["crop"])
    runtimes = [{"runtime": "torch eager fp32", "kind": "torch", "bf16": False, "path": str(checkpoint)},
                {"runtime": "torch bf16 autocast", "kind": "torch", "bf16": True, "path": str(checkpoint)}]
    for file in onnx_files or []:
        model = OnnxModel(file)
        if model.crop != crop:
            raise CncnnError(f"--onnx {file} takes {model.crop[0]}×{model.crop[1]} images but {checkpoint} "
                             f"{crop[0]}×{crop[1]}: compare the files exported from this checkpoint")
        precision = "int8" if "quantization" in model.metadata else "fp32"
        runtimes.append({"runtime": f"onnxruntime {precision} ({Path(file).name})", "kind": "onnx", "path": str(file)})
    rows = []
    for batch in batch_sizes:
        measured = [_in_child({**runtime, "batch": batch, "threads": threads, "steps": steps, "warmup": warmup})
                    for runtime in runtimes]
        for row in measured:
            row["ratio"] = row["images_per_s"] / measured[0]["images_per_s"]
        rows += measured
    return rows


def _in_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["it exited with code %d" % done.returncode])[-1]
        raise CncnnError(f"benchmark of {spec['runtime']} at batch {spec['batch']} failed: {last}", exit_code=1)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(spec_json: str) -> None:
    """Measure one runtime (in its own process) and print its row as one JSON line."""
    spec = json.loads(spec_json)
    if spec["kind"] == "onnx":
        model = OnnxModel(spec["path"], spec["threads"])
        size, step = model.crop, model.run
    else:
        import torch

        from cncnn_cli.apis.inference import Predictor
        from cncnn_cli.registry import load_plugins

        load_plugins()
        torch.set_num_threads(spec["threads"])
        predictor = Predictor.from_checkpoint(spec["path"], device="cpu")
        size = size_pair(predictor.info.preprocess["crop"])

        def step(images: np.ndarray) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["bf16"]):
                predictor.forward(torch.from_numpy(images))

    images = np.random.default_rng(0).integers(0, 256, (spec["batch"], 3, *size), dtype=np.uint8)
    for _ in range(spec["warmup"]):
        step(images)
    seconds = []
    for _ in range(spec["steps"]):
        started = time.perf_counter()
        step(images)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"runtime": spec["runtime"], "batch": spec["batch"], "threads": spec["threads"],
                      "images_per_s": spec["batch"] / float(np.median(seconds)),
                      "p50_ms": 1000 * float(np.percentile(seconds, 50)),
                      "p95_ms": 1000 * float(np.percentile(seconds, 95)),
                      "peak_rss_mib": peak_rss_mib()}))


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
