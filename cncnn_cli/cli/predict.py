"""``cncnn predict``: top-k classes for images and folders of images."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cncnn_cli.cli.common import MaxPixelsOption, PluginOption, default_checkpoint, err_console, out_console, setup
from cncnn_cli.data.images import find_images
from cncnn_cli.apis.inference import Predictor


def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (walked for images).",
                                                 show_default=False)],
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors).")] = None,
    topk: Annotated[int, typer.Option(min=1, help="How many classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Predict the classes of images.

    Example: cncnn predict bird.jpg photos/ --topk 3 --json
    """
    setup(plugin, max_pixels)
    predictor = Predictor.from_checkpoint(checkpoint or default_checkpoint(), device=device)
    images = [image for path in inputs for image in find_images(path)]
    results = predictor.predict(images, topk=topk, batch_size=batch_size)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        _print_table(results)
    failed = [r for r in results if r.error is not None]
    for result in failed:
        err_console.print(f"error: {result.error}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _print_table(results) -> None:
    table = Table(title="cncnn predict")
    table.add_column("image", overflow="fold")
    table.add_column("rank", justify="right")
    table.add_column("class")
    table.add_column("score", justify="right")
    for result in results:
        if result.error is not None:
            table.add_row(result.image, "-", "[red]unreadable[/red]", "")
            continue
        for rank, p in enumerate(result.predictions, 1):
            table.add_row(result.image if rank == 1 else "", str(rank), p["label"], f"{p['score']:.4f}",
                          end_section=rank == len(result.predictions))
    out_console.print(table)
