"""``cncnn eval``: accuracy of a checkpoint on a dataset split."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.cli.common import (CompileOption, MaxPixelsOption, PluginOption, default_checkpoint, err_console,
                                   folder_path, out_console, setup)
from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.utils.textio import output_text, output_value
from cncnn_cli.utils.paths import is_inside


def evaluate(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="cncnn .safetensors checkpoint (default: newest work_dirs/**/best.safetensors), or an .onnx file from "
             "`cncnn export`, run by onnxruntime.", show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset plugin (default: the checkpoint's).")] = None,
    data_root: Annotated[Optional[str], typer.Option(
        help="Dataset folder (default: the checkpoint's, unless --dataset names another).", callback=folder_path)] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="Data loader processes.")] = DEFAULT_WORKERS,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    tta: Annotated[str, typer.Option(
        help="none, or flip: average each image's logits with its mirror's (also reports the plain number).")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Also write per_class.csv (worst class first), confusion.png, errors.png (the most confident "
             "mistakes) and predictions.jsonl (every image) here.", callback=folder_path)] = None,
    mistakes: Annotated[int, typer.Option(min=1, help="How many mistakes errors.png shows (with --out).")] = 16,
    retrieval: Annotated[bool, typer.Option(
        "--retrieval", help="Also Recall@1/2/4/8 and MAP@R of the checkpoint's embedding: every image a query "
                            "against all the others.")] = False,
    compile: CompileOption = False,
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Top-1, top-5, mean per-class accuracy and each classifier's top-1 on a split.

    Example: cncnn eval work_dirs/cub/best.safetensors --json

    Example: cncnn eval model.safetensors --dataset imagefolder --data-root shop_photos --out report/
    """
    setup(plugin, max_pixels)
    from cncnn_cli.evaluation.evaluate import evaluate_checkpoint

    from cncnn_cli.deploy.onnx_runtime import is_onnx, refuse_options

    path = checkpoint or default_checkpoint()
    if is_onnx(path):  # an exported model, run by onnxruntime
        from cncnn_cli.evaluation.exported import evaluate_onnx

        refuse_options(path, device, {"--compile": compile, "--retrieval": retrieval})
        result = evaluate_onnx(path, dataset=dataset, data_root=data_root, split=split, batch_size=batch_size,
                               workers=workers, tta=tta, mistakes=mistakes if out else 0, show_progress=True)
    else:
        result = evaluate_checkpoint(path, dataset=dataset, data_root=data_root, split=split, batch_size=batch_size,
                                     workers=workers, device=device, tta=tta, mistakes=mistakes if out else 0,
                                     show_progress=True, compile=compile, retrieval=retrieval)
    report = result.report
    keys = ("top1", "top5", "mean_class_accuracy", "num_images", "heads")
    if as_json:
        document = {k: report[k] for k in (*keys, "calibration", "retrieval") if k in report}
        if result.without_tta is not None:
            document.update(tta=tta, without_tta={k: result.without_tta[k] for k in keys})
        typer.echo(json.dumps(document, indent=2))
    else:
        table = Table(title=f"cncnn eval · {output_text(str(path))} · {split} ({report['num_images']} images, "
                            f"tta {tta})")
        table.add_column("metric")
        table.add_column("%", justify="right")
        for key in ("top1", "top5", "mean_class_accuracy"):
            table.add_row(key, f"{report[key]:.2f}")
        for name, value in report["heads"].items():
            table.add_row(f"top1 · {name}", f"{value:.2f}")
        if result.without_tta is not None:
            table.add_row("top1 without flips", f"{result.without_tta['top1']:.2f}")
        for key, value in report.get("retrieval", {}).items():
            if key.startswith(("recall@", "map@")):
                table.add_row(f"{key} · {report['retrieval']['embedding']}", f"{value:.2f}")
        out_console.print(table)
        out_console.print(_calibration_table(report["calibration"]))
    if result.skipped:
        err_console.print(f"warning: {result.skipped} unreadable image(s) were skipped (named above)")
    if out is not None:  # after the results: a report that cannot be written does not hide them
        _write_reports(out, result)


def _calibration_table(calibration: dict) -> Table:
    """ECE, NLL and Brier score, plain and (for a calibrated checkpoint) at its temperature."""
    calibrated = calibration["calibrated"]
    table = Table(title="calibration" + ("" if calibrated else " (uncalibrated checkpoint: see `cncnn calibrate`)"))
    table.add_column("metric")
    table.add_column("plain", justify="right")
    if calibrated:
        table.add_column(f"T = {calibrated['temperature']:.3f}", justify="right")
    for key, name, digits in (("ece", "ECE % (15 bins)", 2), ("nll", "NLL", 4), ("brier", "Brier", 4)):
        table.add_row(name, *(f"{part[key]:.{digits}f}" for part in (calibration["plain"], calibrated) if part))
    return table


@contextmanager
def _report_file(path: Path) -> Iterator[Path]:
    """:func:`atomic_write` for one report file, its failure one line naming the file (exit 1).

    The file appears complete or not at all; the reports written before it, and any earlier
    file of the same name, stay as they are.
    """
    try:
        with atomic_write(path) as tmp:
            yield tmp
    except CncnnError as exc:
        cause = exc.__context__  # atomic_write raises from None; the OSError is still its context
        if not isinstance(cause, OSError):
            raise
        raise CncnnError(_unwritable(path, cause), exit_code=1) from None
    except OSError as exc:  # e.g. the folder could not be made
        raise CncnnError(_unwritable(path, exc), exit_code=1) from None


def _unwritable(path: Path, exc: OSError) -> str:
    reason = exc.strerror or first_line(exc)
    return (f"could not write {path}: {reason} (earlier files there are intact); free disk space or pass "
            f"another --out")


def _save_figure(fig, path: Path) -> Path:
    with _report_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _write_reports(out: Path, result) -> None:
    from cncnn_cli.visualization.plotting import confusion_figure, errors_figure

    among = next((image for image in result.paths if is_inside(image, out) and Path(image).exists()), None)
    if among is not None:
        raise CncnnError(f"--out {out} holds the evaluated images ({among}): the reports would be written among "
                         f"the dataset's files; name a folder outside the dataset")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CncnnError(f"could not create the report folder {out}: {exc.strerror or first_line(exc)}; "
                         f"pass another --out", exit_code=1) from None
    written = [_write_per_class(out / "per_class.csv", result), _write_predictions(out / "predictions.jsonl", result),
               _save_figure(confusion_figure(result.confusion.numpy(), result.classes), out / "confusion.png")]
    if result.mistakes:
        names = result.classes
        captions = [output_text(f"{Path(m.path).name}\ntrue: {names[m.label]}\npredicted: {names[m.predicted]} "
                                f"({m.score:.0%})") for m in result.mistakes]
        wrong = int(result.confusion.sum() - result.confusion.trace())
        shown = len(result.mistakes)
        which = ("the only mistake" if wrong == 1 else f"all {wrong} mistakes, most confident first"
                 if shown == wrong else f"the {shown} most confident of {wrong} mistakes")
        title = f"{which} — {result.report['num_images']} images, top-1 {result.report['top1']:.2f}%"
        written.append(_save_figure(errors_figure([m.image for m in result.mistakes],
                                                  [m.mask for m in result.mistakes], captions, title),
                                    out / "errors.png"))
    else:
        err_console.print("no mistakes: errors.png not written", markup=False, highlight=False)
    written.append(_save_figure(_reliability(result), out / "reliability.png"))
    err_console.print(f"wrote {', '.join(map(str, written))}", markup=False, highlight=False, soft_wrap=True)


def _reliability(result):
    """The reliability diagram of the evaluated logits, plain and at the checkpoint's temperature if it has one."""
    import torch

    from cncnn_cli.evaluation.calibration import calibration_report, reliability
    from cncnn_cli.visualization.reliability import reliability_figure

    panels = []
    for title, temperature in [("plain", 1.0)] + ([("calibrated", result.temperature)] if result.temperature else []):
        table = reliability(torch.softmax(result.logits.double() / temperature, 1), result.labels)
        ece = calibration_report(result.logits, result.labels, temperature)["ece"]
        panels.append((f"{title} (T = {temperature:.3f}): ECE {ece:.2f}%",
                       *(table[k].numpy() for k in ("count", "accuracy", "confidence"))))
    return reliability_figure(panels)


def _write_per_class(path: Path, result) -> Path:
    """One row per class, the worst first (ties in class order), so the problems are on top."""
    matrix = result.confusion
    rows = []
    for index, name in enumerate(result.classes):
        total, correct = int(matrix[index].sum()), int(matrix[index, index])
        rows.append((100.0 * correct / total if total else None, index, name, total, correct))
    rows.sort(key=lambda row: (row[0] is None, row[0] if row[0] is not None else 0.0, row[1]))
    with _report_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "class", "images", "correct", "accuracy"])
        for accuracy, index, name, total, correct in rows:
            writer.writerow([index, output_text(name), total, correct, "" if accuracy is None else f"{accuracy:.2f}"])
    return path


def _write_predictions(path: Path, result) -> Path:
    """Every image's true class and top-5 prediction, one JSON object per line, in dataset order."""
    import torch

    probs = torch.softmax(result.logits.float(), 1)
    scores, indices = probs.topk(min(5, probs.shape[1]), dim=1)
    names = result.classes
    with _report_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for image, label, row_scores, row_indices in zip(result.paths, result.labels.tolist(), scores.tolist(),
                                                         indices.tolist()):
            handle.write(json.dumps(output_value({
                "image": image, "label": names[label], "predicted": names[row_indices[0]],
                "correct": row_indices[0] == label,
                "predictions": [{"label": names[i], "index": i, "score": s} for s, i in zip(row_scores, row_indices)],
            })) + "\n")
    return path
