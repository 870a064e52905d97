"""Speed, memory and size of a model variant: the logic behind ``cncnn benchmark``.

What is measured (docs/benchmarks.md repeats it):

- **train**: one step = the data preprocessor on random uint8 images (normalization on
  the device), a train-mode forward in loss mode with random labels, backward of the
  sum of the ``loss_*`` terms and an SGD step (momentum 0.9). ``warmup`` untimed steps,
  then the median wall time of ``steps`` steps.
- **infer**: the same images, eval mode under ``torch.inference_mode``, forward only.
- **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` over the timed training steps
  (weights, gradients, optimizer state, activations), reset after the warm-up, whose
  ``cudnn.benchmark`` algorithm trials and compilation are not training's steady state. On CPU
  the growth of the resident
  set over the training steps: the kernel's peak-RSS mark is reset just before them
  (``/proc/self/clear_refs``) and read after (``ru_maxrss``), minus the RSS before.
  Where the mark cannot be reset, the growth of ``ru_maxrss`` is reported instead, which
  misses memory the process had already peaked at earlier.
- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one eval forward of batch 1
  (FLOPs = 2 × multiply-adds, as torch counts them).

- **MFU**: achieved FLOP/s (3 × the forward's FLOPs per trained image, 1 × per inferred
  one) over the device's dense peak for the precision (:data:`PEAK_TFLOPS`); null for
  devices not in the table, CPUs included.

Everything else is set as ``cncnn train`` sets it (``_setup_precision``): channels_last and
``cudnn.benchmark`` on CUDA (channels_last on CPU with ``--amp``), TF32 per
``--fp32-precision``, ``--amp``'s dtype (bf16 on CPU and where the GPU has it, else fp16 with
a ``GradScaler``), and the batch already on the device, as a pinned loader batch arrives
there, before the timing starts.
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
from cncnn_cli.utils.progress import progress
from cncnn_cli.engine.amp import autocast_dtype
from cncnn_cli.engine.precision import DEFAULT_FP32_PRECISION, apply_fp32_precision, uses_channels_last
from cncnn_cli.errors import CncnnError
from cncnn_cli.models.classifier import build_model
from cncnn_cli.models.compile import compile_model
from cncnn_cli.models.variants import OFFICIAL_FORMULATION
from cncnn_cli.models.variants import VARIANTS as PAPER_VARIANTS
from cncnn_cli.models.variants import variant_model

#: The paper's ablation variants, and the full model computed the authors' way.
VARIANTS = (*PAPER_VARIANTS, OFFICIAL_FORMULATION)
CONVLSTM_VARIANTS = ("full", OFFICIAL_FORMULATION)
#: The recipe whose model the benchmark measures: the paper's CUB model (ResNet-50, C=256, D=512, K=200).
BENCHMARK_RECIPE = "cub"


def variant_config(variant: str, backbone: str = "resnet50", checkpoint_convlstm: bool = False,
                   impl: str | None = None) -> dict:
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
    if impl is not None:
        if variant != "full":
            raise CncnnError(f"--impl chooses the fast path of the full model's ConvLSTM, not of '{variant}'")
        full["fusion"]["impl"] = impl
    if variant == OFFICIAL_FORMULATION:
        return dict(full, fusion=dict(full["fusion"], type="convlstm_official"))
    return variant_model(full, variant)


#: (batch, timed steps, warm-up steps) when not given: a GPU is measured at a training-sized batch
#: over enough steps for a stable median; a CPU step at 448 takes seconds, so there a few suffice.
DEFAULT_RUN = {"cuda": (64, 10, 3), "cpu": (2, 3, 1)}


def run_benchmark(variant: str = "full", image_size: int = 448, batch_size: int | None = None, device: str = "auto",
                  amp: bool = False, steps: int | None = None, warmup: int | None = None,
                  backbone: str = "resnet50", checkpoint_convlstm: bool = False,
                  fp32_precision: str = DEFAULT_FP32_PRECISION, log: Callable[[str], None] = lambda _: None,
                  show_progress: bool = False, compile: bool = False, impl: str | None = None) -> dict:
    """Measure one variant as ``cncnn train`` would run it; returns the ``benchmark --json`` document.

    ``compile`` runs the forward under torch.compile (warm-up steps include the compilation);
    ``impl`` picks the ConvLSTM's fast path (None: the recipe's, ``auto``). The document
    reports both, ``impl`` as what ran (``phase``, ``conv``, or ``plain`` for the authors'
    formulation; None without a ConvLSTM).

    ``batch_size``, ``steps`` and ``warmup`` default per device (:data:`DEFAULT_RUN`);
    ``show_progress``: bars on stderr.
    """
    dev = resolve_device(device)
    default_batch, default_steps, default_warmup = DEFAULT_RUN["cuda" if dev.type == "cuda" else "cpu"]
    batch_size = default_batch if batch_size is None else batch_size
    steps = default_steps if steps is None else steps
    warmup = default_warmup if warmup is None else warmup
    if image_size < 32 or image_size % 32:
        raise CncnnError(f"--image-size {image_size}: expected a multiple of 32 (the backbone's stride)")
    if batch_size < 2:
        raise CncnnError(f"--batch-size {batch_size}: training-mode BatchNorm needs at least 2 images")
    if steps < 1 or warmup < 0:
        raise CncnnError("--steps must be at least 1 and --warmup at least 0")
    cfg = variant_config(variant, backbone, checkpoint_convlstm, impl)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    switches, scaler = _setup_precision(model, dev, amp, fp32_precision)
    if compile:
        compile_model(model, dev)
    impl_on = getattr(getattr(model, "fusion", None), "impl_on", None)
    precision = switches["precision"]
    log(f"{variant} on {device_name(dev)} ({dev}), {precision}, batch {batch_size} at {image_size}px, "
        f"{warmup} warm-up + {steps} timed steps")
    if precision == "bf16" and dev.type == "cpu" and not _native_cpu_bf16():
        log("warning: this CPU has neither avx512_bf16 nor AMX; bf16 is emulated and usually slower than fp32")
    batch = device_batch(batch_size, image_size, cfg["num_classes"], dev)
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
        train_s = _time(train_step, dev, steps, warmup, "training steps", show_progress, memory["after_warmup"])
    log(f"train step {train_s:.3f} s, peak memory {memory['mb']:.0f} MB ({memory['method']})")

    model.eval()

    @torch.inference_mode()
    def infer_step() -> None:
        with autocast():
            model.infer(batch)

    infer_s = _time(infer_step, dev, steps, warmup, "inference steps", show_progress)
    log(f"inference {infer_s:.3f} s per batch")
    flops = count_flops(model, image_size, dev)
    peak = peak_tflops(device_name(dev), mfu_precision(switches))
    return {
        "device": str(dev),
        "device_name": device_name(dev),
        "variant": variant,
        "image_size": image_size,
        "batch_size": batch_size,
        "amp": amp,
        **switches,
        "compile": compile,
        "impl": impl_on(dev, compile) if impl_on else None,
        "steps": steps,
        "warmup": warmup,
        # backward ≈ 2 forwards: a training step is ~3× the forward's FLOPs
        "train": _speed(train_s, batch_size, 3 * flops, peak),
        "infer": _speed(infer_s, batch_size, flops, peak),
        "peak_memory_mb": round(memory["mb"], 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gflops_per_image": round(flops / 1e9, 3),
    }


def _speed(step_s: float, batch_size: int, flops_per_image: float, peak: float | None) -> dict:
    """Step time, throughput and MFU (achieved FLOP/s over the device's dense peak; None if unknown)."""
    mfu = None if peak is None else round(flops_per_image * batch_size / step_s / (peak * 1e12), 4)
    return {"step_s": round(step_s, 4), "images_per_s": round(batch_size / step_s, 3), "mfu": mfu}


def _setup_precision(model: torch.nn.Module, device: torch.device, amp: bool, fp32_precision: str):
    """(the switches that shape the run, GradScaler or None), set as ``cncnn train`` sets them.

    channels_last on CUDA always and on CPU with AMP (:func:`uses_channels_last`; oneDNN's bf16
    convolution backward in NCHW falls back to slow kernels: 8.5 s per step against 1.0 s for
    ResNet-50 CN-CNN at 448, batch 2, on the Xeon of docs/benchmarks.md); cudnn.benchmark on
    CUDA; TF32 per ``fp32_precision``; bf16 without a loss scaler, fp16 with one.
    """
    fp32 = apply_fp32_precision(device, fp32_precision)
    channels_last = uses_channels_last(device, amp)
    if channels_last:
        model.data_preprocessor.channels_last = True
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = amp_precision(device) if amp else "fp32"
    switches = {"precision": precision, **fp32, "channels_last": channels_last,
                "cudnn_benchmark": device.type == "cuda"}
    return switches, torch.amp.GradScaler("cuda") if precision == "fp16" else None


def mfu_precision(switches: dict) -> str:
    """The peak a run is measured against: its autocast dtype, else TF32 or plain fp32."""
    if switches["precision"] != "fp32":
        return switches["precision"]
    return "tf32" if switches["tf32"] else "fp32"


_HOPPER_SXM = {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}
_A100 = {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}
#: Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: (name part, boards with the same name
#: part but lower clocks, peaks). H100 PCIe/NVL and H200 NVL are slower than the SXM figures.
PEAK_TFLOPS: tuple[tuple[str, tuple[str, ...], dict[str, float]], ...] = (
    ("H100", ("PCIe", "NVL"), _HOPPER_SXM),
    ("H200", ("NVL",), _HOPPER_SXM),
    ("A100", (), _A100),
)


def peak_tflops(name: str, precision: str) -> float | None:
    """The dense peak of the device called ``name`` for ``precision``; None for a device not listed."""
    for part, slower, peaks in PEAK_TFLOPS:
        if part in name and not any(board in name for board in slower):
            return peaks.get(precision)
    return None


def device_batch(batch_size: int, image_size: int, num_classes: int, device: torch.device) -> dict:
    """Random uint8 images and labels already on ``device``: a loader batch (pinned on CUDA, as the
    training loaders pin it) copied before the timing, so the timed steps hold no host→device copy."""
    inputs = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (batch_size,))
    if device.type == "cuda":
        inputs, labels = inputs.pin_memory(), labels.pin_memory()
    batch = {"inputs": inputs.to(device, non_blocking=True), "data_samples": labels.to(device, non_blocking=True)}
    _sync(device)
    return batch


def amp_precision(device: torch.device) -> str:
    """The autocast dtype ``--amp`` trains with on ``device`` (:func:`autocast_dtype`), by name."""
    return "bf16" if autocast_dtype(device) == torch.bfloat16 else "fp16"


def _autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _time(step: Callable[[], None], device: torch.device, steps: int, warmup: int, name: str,
          show_progress: bool, after_warmup: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``steps`` calls after ``warmup`` untimed ones (then ``after_warmup()``)."""
    times = []
    with progress(name, total=warmup + steps, unit="steps", enabled=show_progress) as bar:
        for _ in range(warmup):
            step()
            bar.advance()
        _sync(device)
        after_warmup()
        for _ in range(steps):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
            bar.advance()
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _peak_memory(device: torch.device):
    """Yields a dict filled on exit with ``mb`` (peak memory in MiB) and the ``method`` used.

    Its ``after_warmup`` is called between warm-up and timed steps: on CUDA it resets the peak
    (the allocator's peak over steady steps is what training needs); on CPU it does nothing,
    since there the growth of the resident set is the measure, and the first steps are where it grows.
    """
    result: dict = {"after_warmup": lambda: None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        result["after_warmup"] = lambda: torch.cuda.reset_peak_memory_stats(device)
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
