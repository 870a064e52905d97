"""``cncnn export``: a checkpoint as an ONNX file or a ``torch.export`` program, verified against cncnn."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import PluginOption, out_console, setup
from cncnn_cli.errors import CncnnError


def export(
    checkpoint: Annotated[Path, typer.Argument(help="cncnn .safetensors checkpoint.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Output file, .onnx or .pt2 (a .pt2 gets OUT.json beside it).",
                                        show_default=False)],
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
    plugin: PluginOption = None,
) -> None:
    """Export a checkpoint for runtimes without cncnn: uint8 RGB images in, ensemble logits out.

    Example: cncnn export work_dirs/cub/best.safetensors cub.onnx
    """
    if dynamic_batch and batch is not None:
        raise CncnnError("--batch and --dynamic-batch exclude each other")
    setup(plugin)
    from cncnn_cli.apis.export import export_checkpoint

    result = export_checkpoint(checkpoint, out, fmt, batch, opset, verify, images)
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
    out_console.print(table)
