"""``cncnn benchmark``: training and inference speed, peak memory, parameters and FLOPs of a variant."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.table import Table

from cncnn_cli.models.variants import OFFICIAL_FORMULATION, VARIANTS
from cncnn_cli.cli.common import CompileOption, PluginOption, err_console, file_path, folder_path, out_console, setup
from cncnn_cli.errors import CncnnError

Variant = Enum("Variant", {name: name for name in (*VARIANTS, OFFICIAL_FORMULATION)}, type=str)


def benchmark(
    variant: Annotated[Variant, typer.Option(help="Model variant (official-formulation: the authors' way of "
                                                  "computing the full model).")] = Variant("full"),
    image_size: Annotated[int, typer.Option(min=32, help="Square input size, a multiple of 32.")] = 448,
    batch_size: Annotated[Optional[int], typer.Option(
        min=2, show_default=False, help="Images per step [default: 64 on CUDA, 2 on CPU].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision as `train --amp`: bf16 on CPU; bf16 (else "
                                                    "fp16 with a GradScaler) on CUDA.")] = False,
    fp32_precision: Annotated[Literal["high", "highest"], typer.Option(
        help="CUDA fp32 matmuls and convolutions, as `train`: high = TF32, highest = full fp32.")] = "high",
    steps: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="Timed steps, the median is reported [default: 10 on CUDA, 3 on CPU].")
    ] = None,
    warmup: Annotated[Optional[int], typer.Option(
        min=0, show_default=False, help="Untimed steps first [default: 3 on CUDA, 1 on CPU].")] = None,
    checkpoint_convlstm: Annotated[bool, typer.Option(
        "--checkpoint-convlstm", help="Recompute the ConvLSTM in backward instead of storing it (less memory).")
    ] = False,
    impl: Annotated[Optional[Literal["auto", "phase", "conv", "plain"]], typer.Option(
        show_default=False,
        help="The ConvLSTM's formulation (full variant): phase (im2col + GEMM), conv (library convolutions), "
             "plain (the formula as written) [default: auto, phase on CPU, conv on CUDA and under --compile].")] = None,
    compile: CompileOption = False,
    backbone: Annotated[str, typer.Option(hidden=True, help="Backbone (tests use resnet18).")] = "resnet50",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    inference: Annotated[bool, typer.Option(
        "--inference", help="CPU inference of --checkpoint and its --onnx exports instead, one table: torch eager "
                            "fp32, torch bf16 autocast, torch.compile (or why it is not available), onnxruntime; "
                            "at batch 1 and 8 (or --batch-size).")] = False,
    checkpoint: Annotated[Optional[Path], typer.Option(help="With --inference: the .safetensors checkpoint.",
                                                       show_default=False)] = None,
    onnx: Annotated[Optional[list[Path]], typer.Option(
        "--onnx", help="With --inference: a file `cncnn export` wrote from it, fp32 or int8 (repeatable).",
        show_default=False, callback=file_path)] = None,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="With --inference: threads of every runtime [default: the machine's cores].",
        show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="With --inference: also each runtime's top-1 on this labelled dataset and its change against eager "
             "fp32 [default: the checkpoint's, when --data-root is given].", show_default=False)] = None,
    data_root: Annotated[Optional[str], typer.Option(
        help="With --inference: the labelled dataset's folder.", show_default=False, callback=folder_path)] = None,
    split: Annotated[str, typer.Option(help="With --inference --dataset: the split to score.")] = "test",
    limit: Annotated[Optional[int], typer.Option(
        min=1, help="With --inference --dataset: only its first N images [default: all].", show_default=False)
    ] = None,
    plugin: PluginOption = None,
) -> None:
    """Time a training step and inference, and report peak memory, parameters and GFLOPs per image.

    Models are built without pretrained weights (ResNet-50, C=256, D=512, 200 classes).

    Example: cncnn benchmark --variant full --image-size 448 --batch-size 2 --amp --json

    Example: cncnn benchmark --inference --checkpoint best.safetensors --onnx cub.onnx --onnx cub-int8.onnx

    Example: cncnn benchmark --inference --checkpoint best.safetensors --onnx cub-int8.onnx --dataset cub
    --data-root data/CUB_200_2011 --limit 500
    """
    setup(plugin)
    if inference or checkpoint or onnx or threads or dataset or data_root or limit:
        labelled = {"dataset": dataset, "data_root": data_root, "split": split, "limit": limit}
        _inference(inference, checkpoint, onnx or [], batch_size, threads, steps, warmup, as_json, labelled)
        return
    from cncnn_cli.apis.benchmark import run_benchmark

    result = run_benchmark(variant=variant.value, image_size=image_size, batch_size=batch_size, device=device,
                           amp=amp, steps=steps, warmup=warmup, backbone=backbone,
                           checkpoint_convlstm=checkpoint_convlstm, fp32_precision=fp32_precision, log=_log,
                           show_progress=True, compile=compile, impl=impl)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_table(result)


def _inference(inference: bool, checkpoint: Path | None, onnx: list[Path], batch_size: int | None,
               threads: int | None, steps: int | None, warmup: int | None, as_json: bool, labelled: dict) -> None:
    if not inference:
        raise CncnnError("--checkpoint, --onnx, --threads, --dataset, --data-root and --limit apply to --inference: "
                         "also give --inference")
    if checkpoint is None:
        raise CncnnError("--inference needs --checkpoint CKPT.safetensors (and --onnx files exported from it)")
    from cncnn_cli.apis.inference_speed import BATCH_SIZES, run_inference_benchmark

    rows = run_inference_benchmark(checkpoint, onnx, (batch_size,) if batch_size else BATCH_SIZES, threads,
                                   steps or 5, 1 if warmup is None else warmup, **labelled)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    scored = "top1" in rows[0]
    table = Table(title=f"cncnn benchmark --inference: {checkpoint} ({rows[0]['threads']} threads)")
    for column in ("runtime", "batch", "images/s", "× eager fp32", "p50 ms", "p95 ms", "peak RSS MiB",
                   *(("top-1 %", "Δ top-1 pts") if scored else ())):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    unavailable = {row["runtime"]: row["reason"] for row in rows if not row["available"]}
    if unavailable:  # below the table, whole: the reason is a sentence, too long for a cell
        table.caption = "\n".join(f"{runtime}: not available: {reason}" for runtime, reason in unavailable.items())
    for row in rows:
        if not row["available"]:
            table.add_row(row["runtime"], str(row["batch"]), "n/a")
            continue
        table.add_row(row["runtime"], str(row["batch"]), f"{row['images_per_s']:.2f}", f"{row['ratio']:.2f}",
                      f"{row['p50_ms']:.0f}", f"{row['p95_ms']:.0f}", f"{row['peak_rss_mib']:.0f}",
                      *((f"{row['top1']:.1f}", f"{row['top1_change']:+.1f}") if scored else ()))
    out_console.print(table)


def _log(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def _print_table(result: dict) -> None:
    table = Table(title=f"cncnn benchmark: {result['variant']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    precision = f"{result['precision']} autocast" if result["amp"] else "fp32"
    if result["tf32"]:
        precision += ", fp32 matmuls in TF32"
    if result["channels_last"]:
        precision += ", channels_last"
    rows = [
        ("device", f"{result['device_name']} ({result['device']})"),
        ("precision", precision),
        ("ConvLSTM path, compile", f"{result['impl'] or 'n/a'}, {'torch.compile' if result['compile'] else 'eager'}"),
        ("image size", str(result["image_size"])),
        ("batch size", str(result["batch_size"])),
        ("train step", f"{result['train']['step_s']:.3f} s"),
        ("train throughput", f"{result['train']['images_per_s']:.2f} images/s"),
        ("inference step", f"{result['infer']['step_s']:.3f} s"),
        ("inference throughput", f"{result['infer']['images_per_s']:.2f} images/s"),
        ("MFU train / inference", _mfu(result)),
        ("peak memory (train)", f"{result['peak_memory_mb']:.0f} MB"),
        ("parameters", f"{result['params_m']:.2f} M"),
        ("GFLOPs per image", f"{result['gflops_per_image']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out_console.print(table)


def _mfu(result: dict) -> str:
    train, infer = result["train"]["mfu"], result["infer"]["mfu"]
    if train is None:
        return "n/a (no known peak for this device)"
    return f"{train:.1%} / {infer:.1%}"
