"""``cncnn predict``: top-k classes for images and folders of images, as a table, JSON, or a stream."""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Optional

import typer
from rich.table import Table

from cncnn_cli.cli.common import (CompileOption, MaxPixelsOption, PluginOption, default_checkpoint, err_console,
                                   out_console, setup)
from cncnn_cli.errors import CncnnError

#: ``--out`` formats, chosen by the file's suffix.
OUT_FORMATS = (".jsonl", ".csv")


def predict(
    inputs: Annotated[list[Path], typer.Argument(
        help="Image files or folders (walked for images); '-' reads image paths from stdin, one per line.",
        show_default=False)],
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors).")] = None,
    topk: Annotated[int, typer.Option(min=1, help="How many classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    as_jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="One JSON object per image on stdout, written as each batch finishes.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Also stream the results into this .jsonl or .csv file.", show_default=False)] = None,
    compile: CompileOption = False,
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Predict the classes of images.

    Example: cncnn predict bird.jpg photos/ --topk 3 --json

    Example: find photos -name '*.jpg' | cncnn predict - --jsonl > predictions.jsonl
    """
    if as_json and as_jsonl:
        raise CncnnError("give either --json (one document) or --jsonl (one line per image), not both")
    if out is not None and out.suffix.lower() not in OUT_FORMATS:
        raise CncnnError(f"--out {out}: expected a .jsonl or .csv file")
    setup(plugin, max_pixels)
    from cncnn_cli.apis.inference import Predictor
    from cncnn_cli.utils.progress import progress

    predictor = Predictor.from_checkpoint(checkpoint or default_checkpoint(), device=device, compile=compile)
    total = None if any(path == Path("-") or path.is_dir() for path in inputs) else len(inputs)
    failed = 0
    with ExitStack() as stack:
        writers = []
        if as_jsonl:
            writers.append(_JsonLines(sys.stdout))
        if out is not None:
            writers.append(_open_writer(stack, out, topk))
        kept = [] if not writers or as_json else None  # the table and --json need every result at the end
        bar = stack.enter_context(progress("predicting", total=total, unit="images"))
        for result in predictor.iter_predict(_images(inputs), topk=topk, batch_size=batch_size):
            for writer in writers:
                writer.write(result)
            if kept is not None:
                kept.append(result)
            if result.error is not None:
                failed += 1
                err_console.print(f"error: {result.error}", markup=False, highlight=False, soft_wrap=True)
            bar.advance()
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in kept], indent=2))
    elif kept is not None:
        _print_table(kept)
    if out is not None:
        err_console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _images(inputs: Iterable[Path]) -> Iterator[Path]:
    """Every image path, lazily: folders walked as they are reached, ``-`` read from stdin line by line."""
    from cncnn_cli.data.images import iter_images

    for path in inputs:
        if path == Path("-"):
            yield from (Path(line.rstrip("\r\n")) for line in sys.stdin if line.strip())
        else:
            yield from iter_images(path)


class _JsonLines:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, result) -> None:
        self.stream.write(json.dumps(result.to_json()) + "\n")
        self.stream.flush()


class _CsvRows:
    """One row per image: its path, then label and score for each of the top k, and an error column."""

    def __init__(self, stream: IO[str], topk: int) -> None:
        self.stream, self.topk = stream, topk
        self.writer = csv.writer(stream)
        ranks = [(f"label_{k}", f"score_{k}") for k in range(1, topk + 1)]
        self.writer.writerow(["image", *[name for pair in ranks for name in pair], "error"])

    def write(self, result) -> None:
        cells = [cell for p in result.predictions for cell in (p["label"], f"{p['score']:.6f}")]
        cells += [""] * (2 * self.topk - len(cells))
        self.writer.writerow([result.image, *cells, result.error or ""])
        self.stream.flush()


def _open_writer(stack: ExitStack, out: Path, topk: int):
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stream = stack.enter_context(open(out, "w", newline="" if out.suffix.lower() == ".csv" else None,
                                          encoding="utf-8"))
    except OSError as exc:
        raise CncnnError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    return _CsvRows(stream, topk) if out.suffix.lower() == ".csv" else _JsonLines(stream)


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
