"""``cncnn eval``: accuracy of a checkpoint on a dataset split."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.cli.common import MaxPixelsOption, PluginOption, default_checkpoint, err_console, out_console, setup


def evaluate(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors).", show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset plugin (default: the checkpoint's).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Dataset folder (default: the checkpoint's).")] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="Data loader processes.")] = DEFAULT_WORKERS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    tta: Annotated[str, typer.Option(
        help="none, or flip: average each image's logits with its mirror's (also reports the plain number).")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write per_class.csv and confusion.png here.")] = None,
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Top-1, top-5, mean per-class accuracy and each classifier's top-1 on a split.

    Example: cncnn eval work_dirs/cub/best.safetensors --json

    Example: cncnn eval model.safetensors --dataset imagefolder --data-root shop_photos --out report/
    """
    setup(plugin, max_pixels)
    from cncnn_cli.evaluation.evaluate import evaluate_checkpoint

    path = checkpoint or default_checkpoint()
    result = evaluate_checkpoint(path, dataset=dataset, data_root=data_root, split=split, batch_size=batch_size,
                                 workers=workers, device=device, tta=tta)
    report = result.report
    keys = ("top1", "top5", "mean_class_accuracy", "num_images", "heads")
    if as_json:
        document = {k: report[k] for k in keys}
        if result.without_tta is not None:
            document.update(tta=tta, without_tta={k: result.without_tta[k] for k in keys})
        typer.echo(json.dumps(document, indent=2))
    else:
        table = Table(title=f"cncnn eval · {path} · {split} ({report['num_images']} images, tta {tta})")
        table.add_column("metric")
        table.add_column("%", justify="right")
        for key in ("top1", "top5", "mean_class_accuracy"):
            table.add_row(key, f"{report[key]:.2f}")
        for name, value in report["heads"].items():
            table.add_row(f"top1 · {name}", f"{value:.2f}")
        if result.without_tta is not None:
            table.add_row("top1 without flips", f"{result.without_tta['top1']:.2f}")
        out_console.print(table)
    if result.skipped:
        err_console.print(f"warning: {result.skipped} unreadable image(s) were skipped (named above)")
    if out is not None:
        _write_reports(out, result)


def _write_reports(out: Path, result) -> None:
    from cncnn_cli.visualization.plotting import confusion_figure, save_figure

    out.mkdir(parents=True, exist_ok=True)
    matrix = result.confusion
    with open(out / "per_class.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "class", "images", "correct", "accuracy"])
        for index, name in enumerate(result.classes):
            total = int(matrix[index].sum())
            correct = int(matrix[index, index])
            writer.writerow([index, name, total, correct, f"{100.0 * correct / total:.2f}" if total else ""])
    save_figure(confusion_figure(matrix.numpy(), result.classes), out / "confusion.png")
    err_console.print(f"wrote {out / 'per_class.csv'} and {out / 'confusion.png'}", markup=False, highlight=False,
                      soft_wrap=True)


