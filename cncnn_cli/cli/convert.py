"""``cncnn convert``: import checkpoints from other implementations."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import PluginOption, err_console, file_path, setup
from cncnn_cli.utils.paths import refuse_own_input

app = typer.Typer(help="Import checkpoints from other implementations.", no_args_is_help=True)


@app.command("official")
def official(
    src: Annotated[Path, typer.Argument(help="The authors' released .pth state dict.", show_default=False,
                                        callback=file_path)],
    dst: Annotated[Path, typer.Argument(help="Where to write the cncnn .safetensors checkpoint.",
                                        show_default=False, callback=file_path)],
    recipe: Annotated[Optional[str], typer.Option(
        help="cub, cars or aircraft (or any recipe): its test preprocessing and dataset.")] = None,
    classes: Annotated[Optional[Path], typer.Option(
        help="Text file with one class name per line, in label order.", callback=file_path)] = None,
    plugin: PluginOption = None,
) -> None:
    """Convert a state dict in the authors' released layout into a cncnn checkpoint.

    The file is read with torch.load(weights_only=True): it can never run code.

    Example: cncnn convert official cub_cncnn.pth cub.safetensors --recipe cub --classes classes.txt
    """
    refuse_own_input(dst, [src, *([classes] if classes else [])], "DST")
    setup(plugin)
    from cncnn_cli.config.resolve import resolve_config
    from cncnn_cli.weights.convert import convert_official

    preprocess = dataset = None
    if recipe is not None:
        cfg = resolve_config(recipe)
        preprocess, dataset = dict(cfg.preprocess), cfg.dataset["type"]
    path, ignored = convert_official(src, dst, preprocess=preprocess, dataset=dataset, classes_file=classes)
    if ignored:
        err_console.print(f"ignored {len(ignored)} key(s) that CN-CNN does not use: {', '.join(ignored)}",
                          markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
