"""``cncnn embed``: one L2-normalised vector per image, for retrieval, clustering or galleries."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.cli.common import (MaxPixelsOption, PluginOption, default_checkpoint, err_console, file_path,
                                   folder_path, setup)
from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.cli.image_inputs import refuse_only_empty_folders, walk_inputs
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.paths import refuse_own_input
from cncnn_cli.utils.textio import output_text, output_value


def embed(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="Image files or folders (walked for images); '-' reads image paths from stdin. Or use --dataset.",
        show_default=False)] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Write the N×D float32 matrix to this .npy or .safetensors file, and FILE.jsonl beside it "
             "(one line per row: index, image, label).", show_default=False, callback=file_path)] = None,
    as_jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="One JSON object per image on stdout (image, label, embedding).")] = False,
    dataset: Annotated[Optional[str], typer.Option(
        help="Embed a dataset split instead of files (default with --data-root or --split: the checkpoint's).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="The dataset's folder.", callback=folder_path)] = None,
    split: Annotated[Optional[str], typer.Option(help="Dataset split to embed (default: test).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="Data loader processes (with --dataset).")] = DEFAULT_WORKERS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Embed images: the vector the checkpoint names in its metadata (see docs/beyond-top1.md).

    Example: cncnn embed photos/ --checkpoint best.safetensors --out photos.npy

    Example: cncnn embed --dataset imagefolder --data-root shop --split test --out test.safetensors
    """
    from_dataset = dataset is not None or data_root is not None or split is not None
    if from_dataset and inputs:
        raise CncnnError("give either images (IMAGES… or -) or a dataset (--dataset/--data-root/--split), not both")
    if not from_dataset and not inputs:
        raise CncnnError("nothing to embed: give image files or folders, '-' for paths on stdin, or "
                         "--dataset NAME --data-root DIR [--split S]")
    if out is None and not as_jsonl:
        raise CncnnError("where should the embeddings go? give --out FILE.npy|FILE.safetensors, --jsonl, or both")
    setup(plugin, max_pixels)
    from cncnn_cli.apis.embedding import EmbeddingFile, iter_dataset_embeddings
    from cncnn_cli.apis.inference import Predictor
    from cncnn_cli.data.images import is_folder
    from cncnn_cli.utils.progress import progress

    path = checkpoint or default_checkpoint()
    if out is not None:
        refuse_own_input(out, [path], "--out")
    out_file = EmbeddingFile(out) if out is not None else None
    try:
        predictor = Predictor.from_checkpoint(path, device=device)
        if from_dataset:
            data, entries = iter_dataset_embeddings(predictor, path, dataset, data_root, split or "test",
                                                    batch_size, workers)
            total = len(data)
        else:
            refuse_only_empty_folders(inputs)
            total = None if any(p == Path("-") or is_folder(p) for p in inputs) else len(inputs)
            entries = predictor.iter_embed(_images(inputs), batch_size=batch_size)
        failed = 0
        with progress("embedding", total=total, unit="images") as bar:
            for entry in entries:
                if as_jsonl:
                    sys.stdout.write(json.dumps(output_value(entry.to_json())) + "\n")
                    sys.stdout.flush()
                if out_file is not None:
                    out_file.write(entry)
                if entry.error is not None:
                    failed += 1
                    err_console.print(f"error: {output_text(entry.error)}", markup=False, highlight=False, soft_wrap=True)
                bar.advance()
        if out_file is not None:
            out_file.commit({"embedding": predictor.embedding, "checkpoint": str(path)})
    except BaseException:
        if out_file is not None:
            out_file.discard()
        raise
    if out_file is not None:
        err_console.print(f"wrote {out} ({out_file.rows} × {out_file.width or 0}, embedding "
                          f"{predictor.embedding}) and {out_file.index}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _images(inputs: list[Path]):
    """:func:`walk_inputs`, its error entries (an empty folder) as embedding entries."""
    from cncnn_cli.apis.inference import Embedded, Prediction

    for item in walk_inputs(inputs):
        yield Embedded(image=item.image, error=item.error) if isinstance(item, Prediction) else item
