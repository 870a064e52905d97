"""Speed, memory and size of a model variant: the logic behind ``cncnn benchmark``.

What is measured (docs/benchmarks.md repeats it):

- **train**: one step = the data preprocessor on random uint8 images (normalization on
  the device), a train-mode forward in loss mode with random labels, backward of the
  sum of the ``loss_*`` terms and an SGD step (momentum 0.9). ``warmup`` untimed steps,
  then the median wall time of ``steps`` steps.
- **infer**: the same images, eval mode under ``torch.inference_mode``, forward only.
- **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` over the training steps
  (weights, gradients, optimizer state, activations). On CPU the growth of the resident
  set over the training steps: the kernel's peak-RSS mark is reset just before them
  (``/proc/self/clear_refs``) and read after (``ru_maxrss``), minus the RSS before.
  Where the mark cannot be reset, the growth of ``ru_maxrss`` is reported instead, which
  misses memory the process had already peaked at earlier.
- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one eval forward of batch 1
  (FLOPs = 2 × multiply-adds, as torch counts them).

``--amp``: bf16 autocast on CPU; on CUDA bf16 where supported, else fp16 with a
``GradScaler``, and ``cudnn.benchmark``. Both with channels_last (see ``_setup_precision``).
"""
from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cncnn_cli.config.recipes import load_recipe
from cncnn_cli.utils.device import resolve_device
from cncnn_cli.engine.amp import autocast_dtype
from cncnn_cli.errors import CncnnError
from cncnn_cli.models.classifier import build_model
from cncnn_cli.models.variants import OFFICIAL_FORMULATION
from cncnn_cli.models.variants import VARIANTS as PAPER_VARIANTS
from cncnn_cli.models.variants import variant_model

#: The paper's ablation variants, and the full model computed the authors' way.
VARIANTS = (*PAPER_VARIANTS, OFFICIAL_FORMULATION)
CONVLSTM_VARIANTS = ("full", OFFICIAL_FORMULATION)
#: The recipe whose model the benchmark measures: the paper's CUB model (ResNet-50, C=256, D=512, K=200).
BENCHMARK_RECIPE = "cub"


def variant_config(variant: str, backbone: str = "resnet50", checkpoint_convlstm: bool = False) -> dict:
    """The model config of a benchmark variant: the cub recipe's model, without pretrained weights."""
    if variant not in VARIANTS:
        raise CncnnError(f"unknown variant '{variant}'. Available: {', '.join(VARIANTS)}")
    if checkpoint_convlstm and variant not in CONVLSTM_VARIANTS:
        raise CncnnError(f"--checkpoint-convlstm needs a ConvLSTM variant ({' or '.join(CONVLSTM_VARIANTS)}), "
                         f"not '{variant}'")
    full = load_recipe(BENCHMARK_RECIPE).to_dict()["model"]
    full["backbone"] = dict(type=backbone, pretrained=None)
    if checkpoint_convlstm:
        full["fusion"]["checkpoint"] = True
    if variant == OFFICIAL_FORMULATION:
        return dict(full, fusion=dict(full["fusion"], type="convlstm_official"))
    return variant_model(full, variant)


def run_benchmark(variant: str = "full", image_size: int = 448, batch_size: int = 2, device: str = "auto",
                  amp: bool = False, steps: int = 3, warmup: int = 1, backbone: str = "resnet50",
                  checkpoint_convlstm: bool = False, log: Callable[[str], None] = lambda _: None) -> dict:
    """Measure one variant; returns the ``benchmark --json`` document."""
    if image_size < 32 or image_size % 32:
        raise CncnnError(f"--image-size {image_size}: expected a multiple of 32 (the backbone's stride)")
    if batch_size < 2:
        raise CncnnError(f"--batch-size {batch_size}: training-mode BatchNorm needs at least 2 images")
    if steps < 1 or warmup < 0:
        raise CncnnError("--steps must be at least 1 and --warmup at least 0")
    cfg = variant_config(variant, backbone, checkpoint_convlstm)
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    precision, scaler = _setup_precision(model, dev, amp)
    log(f"{variant} on {device_name(dev)} ({dev}), {precision}, batch {batch_size} at {image_size}px, "
        f"{warmup} warm-up + {steps} timed steps")
    if precision == "bf16" and dev.type == "cpu" and not _native_cpu_bf16():
        log("warning: this CPU has neither avx512_bf16 nor AMX; bf16 is emulated and usually slower than fp32")
    batch = {"inputs": torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8),
             "data_samples": torch.randint(0, cfg["num_classes"], (batch_size,))}
    autocast = _autocast(dev, precision)

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def train_step() -> None:
        data = model.data_preprocessor(batch, training=True)
        with autocast():
            loss = sum(model(**data, mode="loss").values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    with _peak_memory(dev) as memory:
        train_s = _time(train_step, dev, steps, warmup)
    log(f"train step {train_s:.3f} s, peak memory {memory['mb']:.0f} MB ({memory['method']})")

    model.eval()

    @torch.inference_mode()
    def infer_step() -> None:
        with autocast():
            model.infer(batch)

    infer_s = _time(infer_step, dev, steps, warmup)
    log(f"inference {infer_s:.3f} s per batch")
    return {
        "device": str(dev),
        "variant": variant,
        "image_size": image_size,
        "batch_size": batch_size,
        "amp": amp,
        "train": {"step_s": round(train_s, 4), "images_per_s": round(batch_size / train_s, 3)},
        "infer": {"step_s": round(infer_s, 4), "images_per_s": round(batch_size / infer_s, 3)},
        "peak_memory_mb": round(memory["mb"], 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gflops_per_image": round(count_flops(model, image_size, dev) / 1e9, 3),
    }


def _setup_precision(model: torch.nn.Module, device: torch.device, amp: bool):
    """(precision name, GradScaler or None). AMP also switches the model to channels_last.

    channels_last on CPU too: oneDNN's bf16 convolution backward in NCHW falls back to
    slow kernels (8.5 s per step against 1.0 s for ResNet-50 CN-CNN at 448, batch 2,
    on the Xeon of docs/benchmarks.md).
    """
    if not amp:
        return "fp32", None
    model.data_preprocessor.channels_last = True
    model.to(memory_format=torch.channels_last)
    precision = amp_precision(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return precision, torch.amp.GradScaler("cuda") if precision == "fp16" else None


def amp_precision(device: torch.device) -> str:
    """The autocast dtype ``--amp`` trains with on ``device`` (:func:`autocast_dtype`), by name."""
    return "bf16" if autocast_dtype(device) == torch.bfloat16 else "fp16"


def _autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _time(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    """Median wall time of ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _peak_memory(device: torch.device):
    """Yields a dict filled on exit with ``mb`` (peak memory in MiB) and the ``method`` used."""
    result: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result.update(mb=torch.cuda.max_memory_allocated(device) / 2**20, method="cuda max_memory_allocated")
        return
    reset = _reset_peak_rss()
    before = _current_rss_kb() if reset else _max_rss_kb()
    yield result
    result.update(mb=max(0, _max_rss_kb() - before) / 1024,
                  method="resident-set growth" if reset else "ru_maxrss growth")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _current_rss_kb() is not None


def _current_rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _max_rss_kb() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def count_flops(model: torch.nn.Module, image_size: int, device: torch.device) -> int:
    """FLOPs (2 per multiply-add) of one eval forward of a single image, as torch counts them."""
    images = torch.zeros(1, 3, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images, mode="tensor")
    return counter.get_total_flops()


def _native_cpu_bf16() -> bool:
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (from /proc/cpuinfo where there is one) and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = ""
    try:
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{name or 'CPU'}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
