"""``cncnn calibrate``: a checkpoint whose scores mean what they say (temperature scaling)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import MaxPixelsOption, PluginOption, err_console, file_path, folder_path, setup
from cncnn_cli.config.defaults import DEFAULT_WORKERS


def calibrate(
    checkpoint: Annotated[Path, typer.Argument(help="cncnn .safetensors checkpoint to calibrate.", show_default=False)],
    out: Annotated[Path, typer.Option(help="The calibrated checkpoint to write (a new file).", show_default=False, callback=file_path)],
    val_fraction: Annotated[Optional[float], typer.Option(
        help="Fit on this class-stratified fraction of the train split, drawn from --seed as `cncnn train "
             "--val-fraction` draws it: use the training run's fraction and seed, so the model never saw "
             "these images.", show_default=False)] = None,
    val_split: Annotated[Optional[str], typer.Option(
        help="Fit on this split of the dataset instead (e.g. val for aircraft).", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="The seed of the --val-fraction draw (the training run's).")] = 0,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset plugin (default: the checkpoint's).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Dataset folder (default: the checkpoint's).", callback=folder_path)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="Data loader processes.")] = DEFAULT_WORKERS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Fit one softmax temperature on validation data and write a checkpoint that carries it.

    Never fitted on the test split. predict, eval, export and the Python API divide the logits by it:
    the scores change, top-1 does not.

    Example: cncnn calibrate work_dirs/cub/best.safetensors --out cub-calibrated.safetensors --val-fraction 0.1

    Example: cncnn calibrate aircraft.safetensors --out aircraft-calibrated.safetensors --val-split val
    """
    setup(plugin, max_pixels)
    from cncnn_cli.apis.calibration import calibrate_checkpoint

    result = calibrate_checkpoint(checkpoint, out, val_fraction=val_fraction, val_split=val_split, seed=seed,
                                  dataset=dataset, data_root=data_root, batch_size=batch_size, workers=workers,
                                  device=device)
    if as_json:
        typer.echo(json.dumps({"temperature": result.temperature, "num_images": result.num_images,
                               "validation": result.validation, "before": result.before, "after": result.after},
                              indent=2))
    else:
        before, after = result.before, result.after
        typer.echo(f"temperature {result.temperature:.4f} fitted on {result.num_images} images ({result.validation})\n"
                   f"validation ECE {before['ece']:.2f}% → {after['ece']:.2f}%, NLL {before['nll']:.4f} → "
                   f"{after['nll']:.4f}, Brier {before['brier']:.4f} → {after['brier']:.4f}")
    err_console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
