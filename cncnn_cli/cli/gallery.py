"""``cncnn gallery build``: new classes from a few images each, without retraining."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import (MaxPixelsOption, PluginOption, default_checkpoint, err_console, file_path,
                                   folder_path, setup)
from cncnn_cli.utils.paths import refuse_own_input

app = typer.Typer(no_args_is_help=True, help="Galleries: add classes from a few images each, without retraining.")


@app.command()
def build(
    root: Annotated[Path, typer.Argument(help="Folder of class folders: ROOT/<class>/<image>, one image or more each.",
                                         show_default=False, callback=folder_path)],
    out: Annotated[Path, typer.Option(help="The gallery to write (.safetensors).", show_default=False, callback=file_path)],
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors).")] = None,
    holdout: Annotated[Optional[float], typer.Option(
        help="Fit an unknown threshold: hold out this fraction of each class's images and accept 95 % of them.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="The seed of the --holdout draw.")] = 0,
    dataset: Annotated[Optional[str], typer.Option(
        help="The checkpoint's training dataset, whose class means `--gallery-mode extend` compares "
             "(default: the checkpoint's).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="That dataset's folder (default: the checkpoint's).", callback=folder_path)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="Data loader processes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Embed class folders into a gallery that `cncnn predict --gallery` ranks.

    Example: cncnn gallery build new_birds/ --checkpoint best.safetensors --out birds.safetensors --holdout 0.2

    Example: cncnn predict photo.jpg --checkpoint best.safetensors --gallery birds.safetensors --gallery-mode extend
    """
    setup(plugin, max_pixels)
    from cncnn_cli.apis.gallery import build_gallery
    from cncnn_cli.apis.inference import Predictor

    path = checkpoint or default_checkpoint()
    refuse_own_input(out, [path], "--out")
    predictor = Predictor.from_checkpoint(path, device=device)
    gallery = build_gallery(predictor, root, out, path, dataset=dataset, data_root=data_root, holdout=holdout,
                            seed=seed, batch_size=batch_size, workers=workers)
    counts = {name: int((gallery.labels == i).sum()) for i, name in enumerate(gallery.classes)}
    summary = {"classes": counts, "embedding": gallery.embedding, "unknown_threshold": gallery.unknown_threshold,
               "extend": gallery.trained_means is not None}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        threshold = "none" if gallery.unknown_threshold is None else f"{gallery.unknown_threshold:.4f}"
        typer.echo(f"{len(counts)} classes, {sum(counts.values())} images, embedding {gallery.embedding}, "
                   f"unknown threshold {threshold}"
                   + ("" if summary["extend"] else " (no trained-class means: --gallery-mode replace only)"))
    err_console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
