"""``cncnn predict``: top-k classes for images and folders of images, as a table, JSON, or a stream."""
from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from cncnn_cli.cli.common import (CompileOption, MaxPixelsOption, PluginOption, default_checkpoint, err_console,
                                   file_path, out_console, setup)
from cncnn_cli.cli.image_inputs import refuse_only_empty_folders, walk_inputs
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.atomic import write_error
from cncnn_cli.utils.textio import output_text, output_value
from cncnn_cli.utils.paths import refuse_own_input

#: ``--out`` formats, chosen by the file's suffix.
OUT_FORMATS = (".jsonl", ".csv")


def predict(
    inputs: Annotated[list[Path], typer.Argument(
        help="Image files or folders (walked for images); '-' reads image paths from stdin, one per line.",
        show_default=False, readable=False)],  # an unreadable one is its own error entry, not a usage error
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors), or an .onnx file from "
             "`cncnn export`, run by onnxruntime without torch.")] = None,
    topk: Annotated[int, typer.Option(min=1, help="How many classes to show per image.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    as_jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="One JSON object per image on stdout, written as each batch finishes.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Also stream the results into this .jsonl or .csv file (into FILE.part, renamed to FILE once complete; "
             "Ctrl-C keeps the .part).", show_default=False, callback=file_path)] = None,
    gallery: Annotated[Optional[Path], typer.Option(
        help="Rank by cosine similarity to the class means of this gallery (`cncnn gallery build`); scores are "
             "similarities.", show_default=False, callback=file_path)] = None,
    gallery_mode: Annotated[str, typer.Option(
        help="extend: the checkpoint's classes and the gallery's, compared alike; replace: the gallery's alone.")]
        = "extend",
    unknown_threshold: Annotated[Optional[float], typer.Option(
        help="With --gallery: report an image whose best similarity is below this as unknown (default: the "
             "gallery's fitted threshold, if any).", show_default=False)] = None,
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
    if out is not None and out.is_dir():
        raise CncnnError(f"--out {out} is a folder; give a .jsonl or .csv file, e.g. {out / 'predictions.jsonl'}")
    if out is not None:
        refuse_own_input(out, [*inputs, *([checkpoint] if checkpoint else [])], "--out")
    from cncnn_cli.data.images import is_folder, set_max_pixels
    from cncnn_cli.deploy.onnx_runtime import OnnxPredictor, is_onnx, refuse_options
    from cncnn_cli.utils.progress import progress

    exported = checkpoint is not None and is_onnx(checkpoint)  # onnxruntime and numpy: torch is never imported
    if exported:  # no plugins to register: they are parts of torch models
        refuse_options(checkpoint, device, {"--gallery": gallery, "--compile": compile, "--plugin": plugin})
        set_max_pixels(max_pixels)
    else:
        setup(plugin, max_pixels)
    refuse_only_empty_folders(inputs)
    if gallery is None and (unknown_threshold is not None or gallery_mode != "extend"):
        option = "--unknown-threshold" if unknown_threshold is not None else "--gallery-mode"
        raise CncnnError(f"{option} applies to gallery predictions: also give --gallery G")
    if exported:
        predictor = OnnxPredictor.from_file(checkpoint)
    else:
        from cncnn_cli.apis.inference import Predictor

        predictor = Predictor.from_checkpoint(checkpoint or default_checkpoint(), device=device, compile=compile)
    if gallery is not None:
        from cncnn_cli.apis.gallery import GalleryPredictor, load_gallery

        predictor = GalleryPredictor(predictor, load_gallery(gallery), gallery_mode, unknown_threshold, gallery)
    total = None if any(path == Path("-") or is_folder(path) for path in inputs) else len(inputs)
    failed = done = 0
    out_file = None
    try:
        with ExitStack() as stack:
            writers = []
            if as_jsonl:
                writers.append(_JsonLines(sys.stdout))
            if out is not None:
                out_file = _PartFile(out, topk, unknown_column=gallery is not None)
                writers.append(out_file)
            kept = [] if not writers or as_json else None  # the table and --json need every result at the end
            bar = stack.enter_context(progress("predicting", total=total, unit="images"))
            for result in predictor.iter_predict(walk_inputs(inputs), topk=topk, batch_size=batch_size):
                for writer in writers:
                    writer.write(result)
                done += 1
                if kept is not None:
                    kept.append(result)
                if result.error is not None:
                    failed += 1
                    err_console.print(f"error: {output_text(result.error)}", markup=False, highlight=False,
                                      soft_wrap=True)
                bar.advance()
        if out_file is not None:
            out_file.commit()
    except KeyboardInterrupt:
        if out_file is not None:
            out_file.close()
        err_console.print(_interrupted(done, as_jsonl, out_file), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except BaseException:
        if out_file is not None:
            out_file.discard()
        raise
    if as_json:
        typer.echo(json.dumps(output_value([r.to_json() for r in kept]), indent=2))
    elif kept is not None:
        _print_table(kept)
    if out is not None:
        err_console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _interrupted(done: int, as_jsonl: bool, out_file: _PartFile | None) -> str:
    """The one line Ctrl-C leaves: how far it got and where those results are."""
    noun = "result" if done == 1 else "results"
    where = []
    if as_jsonl:
        where.append(f"{done} {noun} were written to stdout")
    if out_file is not None:
        earlier = (f"the earlier {out_file.out} is intact" if out_file.out.exists()
                   else f"{out_file.out} was not written")
        where.append(f"the {done} {noun} so far are in {out_file.part} ({earlier})")
    if not where:
        where.append("nothing was printed")
    return f"interrupted after {done} image{'' if done == 1 else 's'}: " + "; ".join(where)


class _JsonLines:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, result) -> None:
        self.stream.write(json.dumps(output_value(result.to_json())) + "\n")
        self.stream.flush()


class _CsvRows:
    """One row per image: its path, then label and score for each of the top k, and an error column;
    with a gallery, an ``unknown`` column too (true, false, or empty without a threshold)."""

    def __init__(self, stream: IO[str], topk: int, unknown_column: bool = False) -> None:
        self.stream, self.topk, self.unknown_column = stream, topk, unknown_column
        self.writer = csv.writer(stream)
        ranks = [(f"label_{k}", f"score_{k}") for k in range(1, topk + 1)]
        self.writer.writerow(["image", *[name for pair in ranks for name in pair],
                              *(["unknown"] if unknown_column else []), "error"])

    def write(self, result) -> None:
        cells = [cell for p in result.predictions for cell in (p["label"], f"{p['score']:.6f}")]
        cells += [""] * (2 * self.topk - len(cells))
        if self.unknown_column:
            cells.append("" if result.unknown is None else str(result.unknown).lower())
        self.writer.writerow(output_value([result.image, *cells, result.error or ""]))
        self.stream.flush()


class _PartFile:
    """``--out``, streamed into ``OUT.part`` beside it (it grows as each batch finishes) and renamed
    over ``OUT`` only once complete: a failure never leaves a half-written ``OUT``, and an earlier
    ``OUT`` stays as it was until then. A write that fails (a full disk) removes the part file and
    raises one line, exit 1."""

    def __init__(self, out: Path, topk: int, unknown_column: bool = False) -> None:
        self.out, self.part = out, out.with_name(out.name + ".part")
        csv_file = out.suffix.lower() == ".csv"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(self.part, "w", newline="" if csv_file else None, encoding="utf-8")
        except OSError as exc:
            raise CncnnError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        try:
            self.writer = _CsvRows(self.stream, topk, unknown_column) if csv_file else _JsonLines(self.stream)
        except OSError as exc:
            self._fail(exc)

    def write(self, result) -> None:
        try:
            self.writer.write(result)
        except OSError as exc:
            self._fail(exc)

    def commit(self) -> None:
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
            os.replace(self.part, self.out)
        except OSError as exc:
            self._fail(exc)

    def close(self) -> None:
        """Close the part file and keep it (Ctrl-C: the results so far)."""
        try:
            self.stream.close()
        except OSError:
            pass

    def discard(self) -> None:
        self.close()
        self.part.unlink(missing_ok=True)

    def _fail(self, exc: OSError) -> None:
        self.discard()
        raise write_error(self.out, exc, instead="choose another --out") from None


def _plain(value: str) -> Text:
    """A file or class name for the table: never read as rich markup (``[red]`` in a name stays text)."""
    return Text(output_text(value))


def _print_table(results) -> None:
    table = Table(title="cncnn predict")
    table.add_column("image", overflow="fold")
    table.add_column("rank", justify="right")
    table.add_column("class")
    table.add_column("score", justify="right")
    for result in results:
        if result.error is not None:
            table.add_row(_plain(result.image), "-", "[red]unreadable[/red]", "")
            continue
        if result.unknown:
            table.add_row(_plain(result.image), "-", "[yellow]unknown[/yellow] (far from every class)", "")
        for rank, p in enumerate(result.predictions, 1):
            table.add_row(_plain(result.image) if rank == 1 and not result.unknown else "", str(rank),
                          _plain(p["label"]),
                          f"{p['score']:.4f}",
                          end_section=rank == len(result.predictions))
    out_console.print(table)
