"""The GPU check (issue 14): what only a CUDA machine can show, in one run of a few minutes.

1. exactness: every fast fusion against its official formulation (``X`` vs ``X_official`` in
   the FUSIONS registry, each ``impl``), values, gradients and BatchNorm buffers against an
   fp64 reference, in fp32 (TF32 off), bf16 and fp16;
2. syncs: ``torch.cuda.set_sync_debug_mode("warn")`` over a short real training run, warnings
   counted per training iteration and validation batch (and graph breaks where ``compile`` exists);
3. the demo trained with ``--amp`` for 2 epochs, once with ``--accumulate 2``, and resumed;
4. a one-process ``torchrun`` (nccl) with ``--sync-bn``;
5. ``gpu_decode``: nvJPEG's pixels against the CPU loader's, the device's decode images/s, and a
   training epoch on photo-sized JPEGs with ``--gpu-decode``;
6. the benchmark grid: full / official-formulation / baseline × fp32-TF32 / bf16 × batch 16 / 64
   (× compile off/on × impl where ``run_benchmark`` takes them), in the order of :func:`grid_cells`
   until ``--budget-s`` is spent.

Writes the grid rows (docs/cli.md, 'docs/benchmarks/gpu.json') to ``--out`` (``docs/benchmarks/gpu.json``) and everything else
to ``<out stem>_checks.json`` beside it, after every part, so a run cut short keeps what it measured.
``--dry-run`` runs every part on CPU at tiny sizes in well under a minute (the test suite does).
Exit code 1 if any part failed.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from cncnn_cli.apis.benchmark import run_benchmark, variant_config
from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.data.gpu_decode import JpegBytes
from cncnn_cli.data.speed import device_decode_throughput, write_synthetic_jpegs
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.engine.precision import apply_fp32_precision
from cncnn_cli.models.classifier import build_model
from cncnn_cli.registry import FUSIONS, load_plugins

#: A fast path passes a precision if its error against the fp64 reference (max |fast − fp64| /
#: max |fp64| over every output, gradient and BatchNorm buffer) is within this factor of the
#: official formulation's own error, measured in the same run: no figure measured on one machine.
OFFICIAL_ERROR_FACTOR = 2.0
#: In fp64 the official formulation is the reference itself (error 0): the fast path must agree to
#: this many units of fp64 rounding (2.2e-11; the rewrites' reordered sums give about 1e-14).
FP64_EPS_UNITS = 1e5
#: Images per exactness batch. FPA's pooled branch normalizes one value per image, so at batch 2
#: BatchNorm's gradient is (g₁ − g₂)/2 · eps/(var + eps), nearly all cancelled: its rounding noise,
#: amplified hundreds of times, then decides the comparison (fp16 on one CPU: `phase` 1.3e-1, the
#: official 3.6e-2, and `conv` 3.6e-2, or 1.3e-1 with its gate math in fp32). From batch 3 it is a
#: projection, as well conditioned as the rest.
EXACTNESS_BATCH = 8
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Sizes:
    """Everything a part's size depends on: the real run's, or the dry run's tiny ones."""

    device: str
    in_channels: tuple[int, int, int]
    channels: int
    spatial: tuple[int, int, int]
    image_size: int
    backbone: str
    batches: tuple[int, ...]
    steps: int
    warmup: int
    epochs: int
    train_flags: list[str] = field(default_factory=list)
    #: Seconds after which the grid's remaining cells (and parts) are skipped. The dry run has none:
    #: it proves every part runs, which must not depend on how busy the CPU is.
    budget_s: float = 480.0
    #: Hang guard for each command a part runs (a training, torchrun); the dry run's allows a busy CPU.
    command_timeout_s: float = 240.0
    #: torch.compile (and its graph-break count) where the benchmark offers it: on the GPU only, since
    #: compiling on a CPU takes minutes.
    compile: bool = True
    #: Photo-sized JPEGs per split for the gpu_decode part, and its training flags.
    decode_images: int = 64
    decode_flags: list[str] = field(default_factory=lambda: ["--batch-size", "16", "--workers", "4", "--amp"])


FULL = Sizes("cuda", (512, 1024, 2048), 256, (56, 28, 14), 448, "resnet50", (16, 64), 10, 3, 2, ["--workers", "4"])
DRY = Sizes("cpu", (16, 32, 64), 8, (8, 4, 2), 64, "resnet18", (2,), 1, 0, 1,
            ["--backbone", "resnet18", "--no-pretrained", "--image-size", "32", "--workers", "0", "--batch-size", "8",
             "--cfg-options", "model.fusion.channels=16", "--cfg-options", "model.head.hidden=16",
             "--cfg-options", "dataset.train_per_class=4", "--cfg-options", "dataset.test_per_class=2",
             "--cfg-options", "dataset.image_size=40"], budget_s=math.inf, command_timeout_s=1800.0, compile=False,
           decode_images=8,
           decode_flags=["--batch-size", "4", "--workers", "1", "--backbone", "resnet18", "--image-size", "32",
                         "--cfg-options", "model.fusion.channels=16", "--cfg-options", "model.head.hidden=16"])
#: Mean |nvJPEG − libjpeg-turbo| grey levels per pixel above which the device path is wrong (a shifted
#: or flipped crop gives tens), not merely rounded differently (IDCT, resize kernels: about one).
DECODE_MEAN_DIFF = 2.0


# ------------------------------------------------------------------ exactness
def _literal_values(function, name: str) -> tuple | None:
    """The fast paths a keyword of ``function`` selects, from the module constant beside the fusions.

    ``auto`` picks one of them and ``plain`` is the formula the official formulation already runs.
    """
    if name not in inspect.signature(function).parameters:
        return None
    from cncnn_plugins import fusions

    return tuple(v for v in getattr(fusions, "IMPLS", ()) if v not in ("auto", "plain")) or None


def fusion_pairs() -> list[tuple[str, str, str | None]]:
    """(fast fusion, its official formulation, impl) for every registered pair and fast path."""
    pairs = []
    for name, cls in sorted(FUSIONS.module_dict.items()):
        if f"{name}_official" in FUSIONS.module_dict:
            pairs += [(name, f"{name}_official", impl) for impl in (_literal_values(cls, "impl") or (None,))]
    return pairs


def _fusions(size: Sizes, fast: str, official: str, impl: str | None, dtype: torch.dtype):
    torch.manual_seed(0)
    options = {"impl": impl} if impl else {}
    a = FUSIONS.build(dict(type=fast, in_channels=size.in_channels, channels=size.channels, **options))
    b = FUSIONS.build(dict(type=official, in_channels=size.in_channels, channels=size.channels))
    b.load_state_dict(a.state_dict())
    device = torch.device(size.device)
    gen = torch.Generator(device).manual_seed(0)
    feats = [torch.randn(EXACTNESS_BATCH, c, s, s, device=device, generator=gen, dtype=torch.float64).to(dtype)
             for c, s in zip(size.in_channels, size.spatial)]
    if dtype != torch.float64:  # training's layout
        a, b = a.to(memory_format=torch.channels_last), b.to(memory_format=torch.channels_last)
        feats = [x.contiguous(memory_format=torch.channels_last) for x in feats]
    return a.to(device, dtype), b.to(device, dtype), [x.requires_grad_() for x in feats]


def _step(model, feats, amp: torch.dtype | None) -> list[torch.Tensor]:
    """Outputs, gradients (parameters and inputs) and BatchNorm buffers after one training forward."""
    device = feats[0].device
    with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        out = model(feats)
    gen = torch.Generator(device).manual_seed(1)
    loss = sum((o.double() * torch.randn(o.shape, device=device, generator=gen, dtype=torch.float64)).sum()
               for o in out)
    grads = torch.autograd.grad(loss, [*model.parameters(), *feats])
    buffers = (b for b in model.buffers() if b.is_floating_point())
    return [t.double() for t in (*out, *grads, *buffers)]


def _rel_err(xs, ys) -> float:
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(xs, ys))


def exactness(size: Sizes) -> dict:
    apply_fp32_precision(torch.device(size.device), "highest")  # fp32 means fp32 here
    results = []
    for fast, official, impl in fusion_pairs():
        a, b, feats = _fusions(size, fast, official, impl, torch.float64)
        reference = _step(b, feats, None)
        results.append(_verdict(fast, official, impl, "fp64", _rel_err(_step(a, feats, None), reference), 0.0))
        for precision, amp in AUTOCAST.items():
            a, b, feats = _fusions(size, fast, official, impl, torch.float32)
            fast_err, official_err = (_rel_err(_step(m, feats, amp), reference) for m in (a, b))
            results.append(_verdict(fast, official, impl, precision, fast_err, official_err))
    failed = [r for r in results if not r["passed"]]
    return {"batch": EXACTNESS_BATCH,
            "rule": "max |x - fp64| / max |fp64| over outputs, gradients and BN buffers; pass if <= "
            f"{OFFICIAL_ERROR_FACTOR:g}x the official formulation's error at the same precision (fp64: "
            f"<= {FP64_EPS_UNITS:g} fp64 eps)", "results": results,
            **({"error": f"{len(failed)} comparison(s) out of tolerance"} if failed else {})}


def _verdict(fast: str, official: str, impl: str | None, precision: str, fast_err: float, official_err: float):
    allowed = FP64_EPS_UNITS * torch.finfo(torch.float64).eps if precision == "fp64" else \
        OFFICIAL_ERROR_FACTOR * official_err
    passed = fast_err <= allowed
    print(f"exactness {fast}{f'[{impl}]' if impl else ''} vs {official} {precision}: {fast_err:.1e} "
          f"(official {official_err:.1e}) {'ok' if passed else 'FAILED'}", flush=True)
    return {"fusion": fast, "impl": impl, "against": official, "precision": precision, "fast_rel_err": fast_err,
            "official_rel_err": official_err, "passed": passed}


# ----------------------------------------------------------------------- syncs
@HOOKS.register_module(name="GpuCheckSyncCounter")
class SyncCounter(Hook):
    """Marks where each training iteration and validation batch begins in the list of warnings."""

    priority = "HIGHEST"

    def __init__(self) -> None:
        self.caught: list = []
        self.marks: list[tuple[str, int, int]] = []

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.marks.append(("train", batch_idx, len(self.caught)))

    def after_train_epoch(self, runner) -> None:
        self.marks.append(("epoch end", -1, len(self.caught)))

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.marks.append(("val", batch_idx, len(self.caught)))

    def windows(self) -> dict[str, list[int]]:
        ends = [start for _, _, start in self.marks[1:]] + [len(self.caught)]
        counts: dict[str, list[int]] = {}
        for (stage, _, start), end in zip(self.marks, ends):
            counts.setdefault(stage, []).append(sum(_is_sync(w) for w in self.caught[start:end]))
        return counts


def _is_sync(caught: warnings.WarningMessage) -> bool:
    return "synchroniz" in str(caught.message)


def syncs(size: Sizes, tmp: Path) -> dict:
    from cncnn_cli.config.resolve import resolve_config
    from cncnn_cli.engine.plan import prepare
    from cncnn_cli.engine.runner import build_runner
    from cncnn_cli.engine.signals import StopRequest

    interval = 5
    options = [f"log_interval={interval}", "custom_hooks=[{'type': 'GpuCheckSyncCounter'}]"]
    if size.device == "cuda":  # 12 training iterations of 32, 3 validation batches
        options += ["dataset.train_per_class=40", "dataset.test_per_class=8"]
        flags = {"device": "cuda", "amp": True, "epochs": 1, "workers": 2}
    else:
        flags = {"device": "cpu", "epochs": 1, "workers": 0, "backbone": "resnet18", "pretrained": None,
                 "image_size": 32, "batch_size": 4}
        options += ["dataset.train_per_class=4", "dataset.test_per_class=2", "dataset.image_size=40",
                    "model.fusion.channels=16", "model.head.hidden=16"]
    cfg = resolve_config("demo", flags, options)
    runner = build_runner(cfg, prepare(cfg), tmp / "syncs", None, StopRequest())
    counter = next(hook for hook in runner.hooks if isinstance(hook, SyncCounter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter.caught = caught
        if size.device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            runner.train()
        finally:
            if size.device == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    windows = counter.windows()
    train = windows.get("train", [])
    between = sum(n for i, n in enumerate(train) if (i + 1) % interval and i + 1 != len(train))
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if _is_sync(w))
    return {"sync_debug_mode": "warn" if size.device == "cuda" else "not available on CPU (counts are 0)",
            "log_interval": interval, "syncs_per_train_iteration": train,
            "syncs_per_val_batch": windows.get("val", []), "syncs_at_epoch_end": windows.get("epoch end", []),
            "syncs_between_log_intervals": between, "sites": dict(sites.most_common(15)),
            "graph_breaks": graph_breaks(size)}


def graph_breaks(size: Sizes) -> dict:
    """torch._dynamo's graph breaks in the full model's forward, where ``compile`` is an option."""
    if not size.compile or "compile" not in inspect.signature(run_benchmark).parameters:
        return {"skipped": "no compile option" if size.compile else "not in a dry run"}
    device = torch.device(size.device)
    model = build_model(variant_config("full", size.backbone)).to(device)
    images = torch.randn(2, 3, size.image_size, size.image_size, device=device)
    explanation = torch._dynamo.explain(model)(images, mode="tensor")
    return {"graph_breaks": explanation.graph_break_count, "graphs": explanation.graph_count,
            "reasons": [str(b.reason) for b in explanation.break_reasons][:10]}


# --------------------------------------------------------- training commands
def _cli(args: list[str], timeout: float) -> dict:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
    report = {"command": " ".join(args), "returncode": result.returncode,
              "seconds": round(time.perf_counter() - start, 1)}
    if result.returncode:
        report["error"] = result.stderr[-3000:]
    return report


def _summary(work: Path) -> dict:
    metrics = json.loads((work / "metrics.json").read_text())
    last = metrics["history"][-1]
    return {"epochs": last["epoch"], "loss": last["loss"], "top1": metrics["last"]["top1"],
            "train_images_per_s": last["train_images_per_s"], "batch": metrics["batch"],
            "fp32_matmul_precision": metrics.get("fp32_matmul_precision")}


def train_demo(size: Sizes, tmp: Path) -> dict:
    """The demo with ``--amp``, once with ``--accumulate 2``, and the first run resumed from its state
    (loading a training state onto the GPU, RNG states included, is a path only CUDA shows)."""
    runs = {}
    for name, work, extra in (("amp", "amp", []), ("amp_accumulate_2", "amp_accumulate_2", ["--accumulate", "2"]),
                              ("amp_resumed", "amp", ["--resume"])):
        runs[name] = _cli(["-m", "cncnn_cli", "train", "demo", "--work-dir", str(tmp / work), "--device", size.device,
                           "--amp", "--epochs", str(size.epochs), *size.train_flags, *extra],
                          timeout=size.command_timeout_s)
        if not runs[name]["returncode"]:
            runs[name].update(_summary(tmp / work))
    return runs


def torchrun(size: Sizes, tmp: Path) -> dict:
    work = tmp / "torchrun"
    report = _cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "cncnn_cli",
                   "train", "demo", "--launcher", "pytorch", "--sync-bn", "--epochs", "1", "--work-dir", str(work),
                   "--device", size.device, *size.train_flags], timeout=size.command_timeout_s)
    report["backend"] = "nccl" if size.device == "cuda" else "gloo"
    if not report["returncode"]:
        report.update(_summary(work))
    return report


def gpu_decode(size: Sizes, tmp: Path) -> dict:
    """Device decoding against the loader's own: pixel differences, the device's images/s, one training epoch."""
    root = write_synthetic_jpegs(tmp / "jpegs", count=size.decode_images, size=(500, 375))
    preprocess = {"resize": size.image_size * 600 // 448, "crop": size.image_size}  # CUB's 600 → 448
    dataset = build_dataset("imagefolder", str(root), "train", build_transform(preprocess, False))
    encoded = JpegBytes(dataset, preprocess, train=False)
    decoded, kept = collate([encoded[i] for i in range(len(encoded))])["inputs"].decode(size.device)
    expected = collate([dataset[i] for i in range(len(dataset))])["inputs"]
    diff = (decoded.cpu().int() - expected[kept].int()).abs()
    report = {"images": len(dataset), "kept": len(kept), "max_abs_diff": int(diff.max()),
              "mean_abs_diff": round(float(diff.float().mean()), 4)}
    report.update(device_decode_throughput(encoded, batch_size=min(64, len(encoded)), seconds=5.0,
                                           device=torch.device(size.device)))
    if len(kept) < len(dataset) or report["mean_abs_diff"] > DECODE_MEAN_DIFF:
        report["error"] = f"device pixels differ from the loader's beyond rounding (limit {DECODE_MEAN_DIFF})"
    work = tmp / "gpu_decode"
    report["train"] = _cli(["-m", "cncnn_cli", "train", "cub", "--dataset", "imagefolder", "--data-root", str(root),
                            "--gpu-decode", "--no-pretrained", "--epochs", "1", "--device", size.device,
                            "--work-dir", str(work), *size.decode_flags], timeout=size.command_timeout_s)
    if not report["train"]["returncode"]:
        report["train"].update(_summary(work))
    return report


# ------------------------------------------------------------------ the grid
def grid_cells(size: Sizes) -> list[tuple[str, bool, int, bool, str | None]]:
    """(variant, amp, batch, compiled, impl) for every cell of the grid, the most telling first.

    The whole grid does not fit the time budget once compiling is in it (each compiled cell
    compiles the model first), so it runs in order of what the issue's goals need, and the time
    guard skips what is left: eager cells at batch 64 (the throughput goals, bf16 then fp32), then
    batch 16 (the memory goal), then compiled ones, ``conv`` first (``auto``'s choice under compile).
    """
    parameters = inspect.signature(run_benchmark).parameters
    compiles = (False, True) if size.compile and "compile" in parameters else (False,)
    impls = _literal_values(run_benchmark, "impl") or (None,)
    if "conv" in impls:
        impls = ("conv", *(impl for impl in impls if impl != "conv"))
    cells = []
    for compiled in compiles:
        for batch in sorted(size.batches, reverse=True):
            for amp in (True, False):
                for variant in ("full", "official-formulation", "baseline"):
                    cells += [(variant, amp, batch, compiled, impl) for impl in (impls if variant == "full" else (None,))]
    return cells


def grid(size: Sizes, deadline: float) -> list[dict]:
    parameters = inspect.signature(run_benchmark).parameters
    rows = []
    for variant, amp, batch, compiled, impl in grid_cells(size):
        if time.perf_counter() > deadline:
            rows.append({"variant": variant, "batch": batch, "amp": amp, "compile": compiled, "impl": impl,
                         "skipped": "time budget spent"})
            continue
        rows.append(_row(size, variant, amp, batch, compiled, impl, parameters))
    return rows


def _row(size: Sizes, variant: str, amp: bool, batch: int, compiled: bool, impl: str | None, parameters) -> dict:
    options = {"compile": compiled} if "compile" in parameters else {}
    if impl is not None:
        options["impl"] = impl
    try:
        doc = run_benchmark(variant=variant, image_size=size.image_size, batch_size=batch, device=size.device,
                            amp=amp, steps=size.steps, warmup=size.warmup, backbone=size.backbone, **options)
    except Exception as exc:  # noqa: BLE001 - one failed cell (e.g. out of memory) keeps the others
        return {"variant": variant, "batch": batch, "amp": amp, "compile": compiled, "impl": impl,
                "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if size.device == "cuda":
            torch.cuda.empty_cache()
    precision = doc["precision"] if amp else ("fp32-tf32" if doc["tf32"] else "fp32")
    row = {"device": doc["device_name"], "torch": torch.__version__, "variant": variant, "precision": precision,
           "batch": batch, "compile": doc.get("compile", compiled), "impl": doc.get("impl", impl),
           "train_images_per_s": doc["train"]["images_per_s"], "infer_images_per_s": doc["infer"]["images_per_s"],
           "mfu": doc["train"]["mfu"], "peak_memory_gib": round(doc["peak_memory_mb"] / 1024, 3)}
    print("benchmark", json.dumps(row), flush=True)
    return row


# ------------------------------------------------------------------- driver
def _has_error(value) -> bool:
    if isinstance(value, dict):
        return "error" in value or any(_has_error(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_error(v) for v in value)
    return False


def _write(path: Path, document) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/gpu.json"), help="grid rows (JSON)")
    parser.add_argument("--dry-run", action="store_true", help="every part on CPU at tiny sizes")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"seconds after which the grid's remaining cells are skipped [default: {FULL.budget_s:g}]")
    args = parser.parse_args(argv)
    size = DRY if args.dry_run else FULL
    if args.budget_s is not None:
        size = replace(size, budget_s=args.budget_s)
    if size.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here; use --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    load_plugins()
    start = time.perf_counter()
    deadline = start + size.budget_s
    checks_path = args.out.with_name(f"{args.out.stem}_checks.json")
    checks: dict = {"meta": {"torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": args.dry_run,
                             "device": torch.cuda.get_device_name() if size.device == "cuda" else "cpu",
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                             "note": "figures for this torch version (the GPU machine has 2.11; CI 2.14)"}}
    with tempfile.TemporaryDirectory(prefix="cncnn-gpu-check-") as folder:
        tmp = Path(folder)
        parts = {"exactness": lambda: exactness(size), "syncs": lambda: syncs(size, tmp),
                 "train_demo": lambda: train_demo(size, tmp), "torchrun": lambda: torchrun(size, tmp),
                 "gpu_decode": lambda: gpu_decode(size, tmp)}
        for name, part in parts.items():
            checks[name] = _timed(part, deadline)
            _write(checks_path, checks)
        rows = grid(size, deadline)
    measured = [row for row in rows if "skipped" not in row and "error" not in row]
    _write(args.out, measured)  # only rows of the documented shape
    checks["grid"] = {"rows": len(measured), "failed": [row for row in rows if "error" in row],
                      "skipped": [row for row in rows if "skipped" in row]}
    checks["meta"]["seconds"] = round(time.perf_counter() - start, 1)
    _write(checks_path, checks)
    failed = [name for name, value in checks.items() if _has_error(value)]
    print(f"wrote {args.out} and {checks_path} in {checks['meta']['seconds']} s; "
          f"{'failed: ' + ', '.join(failed) if failed else 'all parts passed'}", flush=True)
    return 1 if failed else 0


def _timed(part, deadline: float) -> dict:
    if time.perf_counter() > deadline:
        return {"skipped": "time budget spent"}
    start = time.perf_counter()
    try:
        result = part()
    except Exception as exc:  # noqa: BLE001 - a failed part is reported and the next one runs
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result = result if isinstance(result, dict) else {"result": result}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"part done in {result['seconds']} s", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
