"""``cncnn benchmark``: training and inference speed, peak memory, parameters and FLOPs of a variant."""
from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from cncnn_cli.models.variants import OFFICIAL_FORMULATION, VARIANTS
from cncnn_cli.cli.common import PluginOption, err_console, out_console, setup

Variant = Enum("Variant", {name: name for name in (*VARIANTS, OFFICIAL_FORMULATION)}, type=str)


def benchmark(
    variant: Annotated[Variant, typer.Option(help="Model variant (official-formulation: the authors' way of "
                                                  "computing the full model).")] = Variant("full"),
    image_size: Annotated[int, typer.Option(min=32, help="Square input size, a multiple of 32.")] = 448,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per step.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision, channels_last: bf16 on CPU; bf16 (else "
                                                    "fp16 with a GradScaler) on CUDA.")] = False,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps (the median is reported).")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps first.")] = 1,
    checkpoint_convlstm: Annotated[bool, typer.Option(
        "--checkpoint-convlstm", help="Recompute the ConvLSTM in backward instead of storing it (less memory).")
    ] = False,
    backbone: Annotated[str, typer.Option(hidden=True, help="Backbone (tests use resnet18).")] = "resnet50",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    plugin: PluginOption = None,
) -> None:
    """Time a training step and inference, and report peak memory, parameters and GFLOPs per image.

    Models are built without pretrained weights (ResNet-50, C=256, D=512, 200 classes).

    Example: cncnn benchmark --variant full --image-size 448 --batch-size 2 --amp --json
    """
    setup(plugin)
    from cncnn_cli.apis.benchmark import run_benchmark

    result = run_benchmark(variant=variant.value, image_size=image_size, batch_size=batch_size, device=device,
                           amp=amp, steps=steps, warmup=warmup, backbone=backbone,
                           checkpoint_convlstm=checkpoint_convlstm, log=_log)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_table(result)


def _log(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def _print_table(result: dict) -> None:
    table = Table(title=f"cncnn benchmark: {result['variant']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    import torch

    from cncnn_cli.apis.benchmark import amp_precision, device_name

    device = torch.device(result["device"])
    precision = f"{amp_precision(device)} autocast, channels_last" if result["amp"] else "fp32"
    rows = [
        ("device", f"{device_name(device)} ({device})"),
        ("precision", precision),
        ("image size", str(result["image_size"])),
        ("batch size", str(result["batch_size"])),
        ("train step", f"{result['train']['step_s']:.3f} s"),
        ("train throughput", f"{result['train']['images_per_s']:.2f} images/s"),
        ("inference step", f"{result['infer']['step_s']:.3f} s"),
        ("inference throughput", f"{result['infer']['images_per_s']:.2f} images/s"),
        ("peak memory (train)", f"{result['peak_memory_mb']:.0f} MB"),
        ("parameters", f"{result['params_m']:.2f} M"),
        ("GFLOPs per image", f"{result['gflops_per_image']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out_console.print(table)
