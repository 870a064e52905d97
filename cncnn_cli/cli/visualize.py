"""``cncnn visualize``: the LH pathway's attention maps per image (the paper's Figure 3), or training curves."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import MaxPixelsOption, PluginOption, default_checkpoint, err_console, folder_path, setup
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.textio import output_text


def visualize(
    ctx: typer.Context,
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="IMAGE", help="Image files or folders (walked for images).", show_default=False,
        readable=False)] = None,  # an unreadable one is its own error, not a usage error
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="cncnn .safetensors checkpoint (default: the newest work_dirs/**/best.safetensors).")] = None,
    curves: Annotated[Optional[Path], typer.Option(
        "--curves", metavar="WORK_DIR", show_default=False,
        help="Plot loss, top-1 and learning rate from WORK_DIR/metrics.json (or that file) "
             "instead of attention maps.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Output folder (default: visualizations/, or WORK_DIR with --curves).", show_default=False, callback=folder_path)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Draw what CN-CNN attends to: per image, the input beside the LH pathway's outputs
    A5, A4, A3 (high to low level) and its spatial masks, saved as <stem>_cncnn.png.
    With --curves, plot a training run's metrics.json as curves.png instead.

    Example: cncnn visualize bird.jpg photos/ --out figures/

    Example: cncnn visualize --curves work_dirs/cub
    """
    setup(plugin, max_pixels)
    from cncnn_cli.apis.inference import Predictor
    from cncnn_cli.apis.pictures import attention_pictures, read_metrics
    from cncnn_cli.data.images import ImageReadError, find_images
    from cncnn_cli.utils.progress import progress
    from cncnn_cli.visualization.plotting import curves_figure, save_figure

    if bool(inputs) == (curves is not None):
        raise typer.BadParameter("give either images or --curves WORK_DIR, exactly one of them", ctx=ctx,
                                 param_hint="IMAGE... / --curves")
    if curves is not None:
        metrics_path = curves if curves.is_file() else curves / "metrics.json"
        written = save_figure(curves_figure(read_metrics(metrics_path)), (out or metrics_path.parent) / "curves.png")
        _say(f"wrote {written}")
        return
    predictor = Predictor.from_checkpoint(checkpoint or default_checkpoint(), device=device)
    images, failed = [], 0
    for path in inputs:
        try:
            images += find_images(path)
        except ImageReadError as exc:  # a folder that cannot be listed: its own error, the others go on
            failed += 1
            _say(f"error: {exc}")
    if not images:
        raise CncnnError(f"no image files in {', '.join(map(str, inputs))}")
    with progress("drawing attention maps", total=len(images), unit="images") as bar:
        for outcome in attention_pictures(predictor, images, out or Path("visualizations"), batch_size):
            if isinstance(outcome, CncnnError):
                failed += 1
                _say(f"error: {outcome}")
            else:
                _say(f"wrote {outcome}")
            bar.advance()
    if failed:
        raise typer.Exit(2)


def _say(line: str) -> None:
    err_console.print(output_text(line), markup=False, highlight=False, soft_wrap=True)
