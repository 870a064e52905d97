"""``cncnn export``: a checkpoint as an ONNX file or a ``torch.export`` program, verified against cncnn."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import folder_path, PluginOption, file_path, out_console, setup
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.paths import refuse_own_input


def export(
    checkpoint: Annotated[Path, typer.Argument(help="cncnn .safetensors checkpoint.", show_default=False,
                                               callback=file_path)],
    out: Annotated[Path, typer.Argument(help="Output file, .onnx or .pt2 (a .pt2 gets OUT.json beside it).",
                                        show_default=False, callback=file_path)],
    fmt: Annotated[Optional[str], typer.Option("--format", help="onnx or pt2 (default: from OUT's suffix).",
                                               show_default=False)] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="A fixed batch size (default: dynamic).",
                                                 show_default=False)] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch",
                                                help="Any batch size (the default).")] = False,
    opset: Annotated[Optional[int], typer.Option(min=1, help="ONNX opset (default: torch's).",
                                                 show_default=False)] = None,
    verify: Annotated[bool, typer.Option(help="Run the file on images and compare with cncnn (max |Δ| ≤ 1e-4).")
                      ] = True,
    images: Annotated[Optional[list[Path]], typer.Option(
        "--images", help="Image or folder to verify on (repeatable; default: 3 synthetic images).",
        show_default=False)] = None,
    quantize: Annotated[Optional[str], typer.Option(
        help="int8: static quantization with onnxruntime (QDQ, per-channel int8 weights, uint8 activations "
             "calibrated on --calibration or --dataset images).", show_default=False)] = None,
    calibration: Annotated[Optional[list[Path]], typer.Option(
        help="With --quantize: calibration images or folders (repeatable), like the ones the model will see.",
        show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="With --quantize: calibrate on this dataset's train split, verify on its test split (the "
             "checkpoint's own dataset by name).", show_default=False)] = None,
    data_root: Annotated[Optional[str], typer.Option(help="With --dataset: its folder.", show_default=False, callback=folder_path)] = None,
    calibration_images: Annotated[int, typer.Option(
        min=1, help="With --quantize: how many images calibrate (spread evenly over the set).")] = 256,
    calibration_method: Annotated[str, typer.Option(
        help="With --quantize: minmax, entropy or percentile (activation ranges).")] = "minmax",
    min_agreement: Annotated[float, typer.Option(
        min=0, max=100, help="With --quantize and --verify: the least top-1 agreement with the fp32 model (%) "
                             "to write the file.")] = 99.0,
    plugin: PluginOption = None,
) -> None:
    """Export a checkpoint for runtimes without cncnn: uint8 RGB images in, ensemble logits out.

    Example: cncnn export work_dirs/cub/best.safetensors cub.onnx

    Example: cncnn export best.safetensors cub-int8.onnx --quantize int8 --dataset cub --data-root data/CUB_200_2011
    """
    if dynamic_batch and batch is not None:
        raise CncnnError("--batch and --dynamic-batch exclude each other")
    refuse_own_input(out, [checkpoint, *(images or []), *(calibration or [])], "OUT")
    setup(plugin)
    from cncnn_cli.apis.export import Int8Options, export_checkpoint

    int8 = None
    if quantize is not None:
        if quantize.lower() != "int8":
            raise CncnnError(f"--quantize {quantize}: expected int8")
        int8 = Int8Options(calibration or [], dataset, data_root, calibration_images, calibration_method,
                           min_agreement)
    elif calibration or dataset or data_root:
        raise CncnnError("--calibration, --dataset and --data-root choose calibration images: also give "
                         "--quantize int8")
    result = export_checkpoint(checkpoint, out, fmt, batch, opset, verify, images, int8)
    _print_table(result)


def _print_table(result) -> None:
    from rich.table import Table

    table = Table(title="cncnn export", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("file", str(result.path))
    if result.sidecar is not None:
        table.add_row("metadata", str(result.sidecar))
    table.add_row("format", result.format)
    table.add_row("size", f"{result.size_bytes / 2**20:.1f} MiB")
    table.add_row("input", "images: uint8 " + "×".join(map(str, result.input_shape)))
    table.add_row("output", f"logits: {result.input_shape[0]}×{result.num_classes}")
    table.add_row("export time", f"{result.seconds:.1f} s")
    for size, delta in result.deltas.items():
        table.add_row(f"max |Δp|, batch {size}", f"{delta:.1e}")
    if not result.deltas:
        table.add_row("verified", "no (--no-verify)")
    if result.quantization is not None:
        q = result.quantization
        table.add_row("quantization", f"int8 QDQ, per-channel weights, {q['calibration_method']} calibration on "
                                      f"{q['calibration_images']} images")
        if "top1_agreement" in q:
            table.add_row("int8 vs fp32", f"top-1 agreement {q['top1_agreement']:.2f}%, max |Δp| "
                                          f"{q['max_delta']:.3f} on {q['verify_images']} images ({q['verified_on']})")
    out_console.print(table)
