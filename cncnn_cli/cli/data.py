"""``cncnn data``: get a dataset, check the files of a copy, inspect it before training on it."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

from cncnn_cli.cli.common import file_path, MaxPixelsOption, PluginOption, folder_path, setup
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.textio import output_text, output_value

if TYPE_CHECKING:  # the data modules import torch: loaded inside the commands, so --help stays fast
    from cncnn_cli.data.check import DataReport

app = typer.Typer(no_args_is_help=True)

#: Above this many classes the per-class table is summarized.
MAX_CLASS_ROWS = 30
#: Unannotated files shown in the text report; --json lists them all.
MAX_UNLISTED_ROWS = 20


@app.callback()
def data() -> None:
    """Get and inspect datasets: cncnn data download cub; cncnn data check --dataset cub --data-root DIR."""


@app.command()
def check(
    recipe: Optional[str] = typer.Argument(None, help="Recipe (file or bundled name) whose dataset to check."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Registered dataset: cub, cars, aircraft, ..."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder or its parent.", callback=folder_path),
    split: Optional[str] = typer.Option(None, "--split", help="One split only (default: all of them)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    max_pixels: MaxPixelsOption = None,
    plugin: PluginOption = None,
) -> None:
    """Decode every image; report counts per split and class, sizes, modes, unreadable and missing files.

    Also lists image files no annotation mentions and differences from the published
    counts; these are notes and leave the exit code alone.

    Exit code 0: clean; 1: problems found (listed); 2: the layout is unusable.

    Example: cncnn data check --dataset cub --data-root ~/data/CUB_200_2011

    Example: cncnn data check aircraft --data-root ~/data
    """
    from cncnn_cli.data.check import check_dataset

    stderr = Console(stderr=True)
    try:
        setup(plugin, max_pixels)
        name, root, options = _resolve(recipe, dataset, data_root)
        report = check_dataset(name, root, split, options, show_progress=True)
    except CncnnError as exc:
        stderr.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        typer.echo(json.dumps(output_value(report.to_dict()), indent=2))
    else:
        _print_report(report, Console())
    raise typer.Exit(0 if report.ok else 1)


def _resolve(recipe: str | None, dataset: str | None, data_root: str | None) -> tuple[str, str | None, dict]:
    """Dataset name, root and options from the recipe, overridden by the flags."""
    from cncnn_cli.config.recipes import dataset_from_recipe

    if recipe is None and dataset is None:
        raise CncnnError("give a RECIPE or --dataset NAME (e.g. cncnn data check --dataset demo)")
    options = dataset_from_recipe(recipe) if recipe is not None else {}
    recipe_name = options.pop("type", None)
    recipe_root = options.pop("data_root", None)
    options.pop("split", None)
    if dataset is not None and dataset != recipe_name:
        options, recipe_root = {}, None  # the recipe's settings belong to another dataset
    return dataset or recipe_name, data_root if data_root is not None else recipe_root, options


def _span(stats: dict[str, int]) -> str:
    return " / ".join(str(stats[key]) for key in ("min", "median", "max")) if stats else "-"


def _print_report(report: DataReport, console: Console) -> None:
    console.print(f"[bold]{report.dataset}[/] at {output_text(report.data_root) or '(generated)'}: "
                  f"{len(report.classes)} classes")
    summary = Table("split", "images", "width min/med/max", "height min/med/max", "modes")
    for split in report.splits:
        sizes = [_span(split.width), _span(split.height)]
        modes = ", ".join(f"{mode} {count}" for mode, count in split.modes.items())
        summary.add_row(split.split, str(split.num_images), *sizes, modes)
    console.print(summary)
    if len(report.classes) <= MAX_CLASS_ROWS:
        per_class = Table("class", *(split.split for split in report.splits))
        for name in report.classes:
            per_class.add_row(output_text(name), *(str(split.per_class[name]) for split in report.splits))
    else:
        per_class = Table("split", "images per class: min", "median", "max")
        for split in report.splits:
            counts = split.per_class
            fewest = min(counts, key=counts.get)
            most = max(counts, key=counts.get)
            median = statistics.median_low(counts.values())
            per_class.add_row(split.split, f"{counts[fewest]} ({output_text(fewest)})", str(median),
                              f"{counts[most]} ({output_text(most)})")
    console.print(per_class)
    if report.ok:
        console.print("[green]OK[/]: every image decodes; no problems found.")
    else:
        console.print(f"[red]{len(report.problems)} problem(s):[/]")
        for problem in report.problems:
            console.print(f"  - {output_text(problem)}", markup=False, highlight=False, soft_wrap=True)
    _print_notes(report, console)


def _print_notes(report: DataReport, console: Console) -> None:
    """Differences from the published counts and unannotated files: worth knowing, not problems."""
    if report.differences:
        console.print(f"[yellow]{len(report.differences)} difference(s) from the published dataset[/] "
                      "(results may not compare with published ones):", soft_wrap=True)
        for line in report.differences:
            console.print(f"  - {line}", markup=False, highlight=False, soft_wrap=True)
    if report.unlisted:
        console.print(f"[yellow]{len(report.unlisted)} image file(s) that no annotation mentions[/] (not used):",
                      soft_wrap=True)
        for path in report.unlisted[:MAX_UNLISTED_ROWS]:
            console.print(f"  - {output_text(path)}", markup=False, highlight=False, soft_wrap=True)
        if len(report.unlisted) > MAX_UNLISTED_ROWS:
            console.print(f"  ... and {len(report.unlisted) - MAX_UNLISTED_ROWS} more (--json lists them all)")


@app.command()
def download(
    dataset: str = typer.Argument(..., help="cub, aircraft, dogs, flowers, pets, inat21 (mini), or nabirds "
                                                 "with --from (Stanford Cars has no official download)."),
    root: Path = typer.Option(Path("data"), "--root", help="Folder to download and extract into.",
                              callback=folder_path),
    sources: Optional[list[str]] = typer.Option(
        None, "--from", show_default=False,
        help="A mirror URL or a file already on disk, for the published file of its name (repeatable)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", show_default=False,
                                         help="Expect this sum instead of the published one (a repackaged mirror)."),
    plugin: PluginOption = None,
) -> None:
    """Download the published files, verify their sums, extract them safely, then check them as data check does.

    An interrupted download resumes when run again; nothing is extracted unless the sums match;
    a file already downloaded and extracted is not fetched again. --sha256 with one --from takes
    a repackaged copy of a whole dataset instead of its published files.

    Exit code 0: downloaded and clean; 1: the download failed or the check found problems; 2: bad input.

    Example: cncnn data download cub --root ~/data

    Example: cncnn data download aircraft --root ~/data --from ~/Downloads/fgvc-aircraft-2013b.tar.gz

    Example: cncnn data download pets --root ~/data --from ~/Downloads/images.tar.gz
    """
    from cncnn_cli.data.check import check_dataset
    from cncnn_cli.data.download import download_dataset

    setup(plugin)
    download_dataset(dataset, root, sources or (), sha256)
    report = check_dataset(dataset, str(root), show_progress=True)
    _print_report(report, Console())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def verify(
    dataset: str = typer.Argument(..., help="Dataset whose published files to compare with: cars, cub, aircraft."),
    files: list[Path] = typer.Argument(..., help="The archives or files you have (any names).",
                                       show_default=False, callback=file_path),
    plugin: PluginOption = None,
) -> None:
    """Compare files you already have with the dataset's published sha256 sums, one line per file.

    For Stanford Cars, whose site is gone: the original cars_train.tgz, cars_test.tgz,
    car_devkit.tgz and cars_test_annos_withlabels.mat. A re-packaged copy has other sums;
    cncnn data check tells whether its contents are complete.

    Exit code 0: every file is a published one; 1: some are not; 2: a file is missing.

    Example: cncnn data verify cars cars_train.tgz cars_test.tgz car_devkit.tgz cars_test_annos_withlabels.mat
    """
    from cncnn_cli.data.download import verify_files

    setup(plugin)
    verdicts = verify_files(dataset, files)
    console = Console()
    for verdict in verdicts:
        console.print(verdict.line(), markup=False, highlight=False, soft_wrap=True)
    if not all(verdict.ok for verdict in verdicts):
        Console(stderr=True).print(f"a re-packaged copy has other sums: cncnn data check --dataset {dataset} "
                                   "--data-root DIR tells whether its contents are complete", soft_wrap=True)
    raise typer.Exit(0 if all(verdict.ok for verdict in verdicts) else 1)


@app.command()
def speed(
    recipe: Optional[str] = typer.Argument(None, help="Recipe whose dataset and preprocessing to measure."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Registered dataset (default: the recipe's)."),
    data_root: Optional[str] = typer.Option(
        None, "--data-root", help="Dataset folder or its parent (default: synthetic JPEGs of the dataset's size).", callback=folder_path),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="Crop size without a recipe (the resize is crop x 512/448) [default: 448]."),
    seconds: float = typer.Option(5.0, "--seconds", help="How long to measure."),
    model_images_per_s: Optional[float] = typer.Option(
        None, "--model-images-per-s", min=0.001,
        help="The model's training images/s (e.g. `cncnn benchmark`'s): says which side is the bottleneck."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Loader processes to judge "
                                          "[default: the recipe's, else one per CPU less one, at most 8]."),
    gpu_decode: bool = typer.Option(
        False, "--gpu-decode", help="Measure `train --gpu-decode`: workers only read files; the device decodes, "
                                    "resizes and crops (CUDA if present, else the CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    plugin: PluginOption = None,
) -> None:
    """Decode + augment images/s of one loader worker, to choose --workers.

    Workers needed so the loader never starves the model ~ training images/s / this figure.

    Example: cncnn data speed cub --model-images-per-s 400

    Example: cncnn data speed aircraft --data-root ~/data --json
    """
    import tempfile

    from cncnn_cli.config.defaults import DEFAULT_WORKERS
    from cncnn_cli.data.dataset import dataset_class
    from cncnn_cli.data.speed import bottleneck, loader_throughput, write_synthetic_jpegs

    setup(plugin)
    preprocess, recipe_workers = None, None
    if recipe is not None:
        from cncnn_cli.config.recipes import load_recipe

        if image_size is not None:
            raise CncnnError("give either a recipe (its preprocessing) or --image-size, not both")
        cfg = load_recipe(recipe)
        preprocess = dict(resize=cfg.preprocess["resize"], crop=cfg.preprocess["crop"])
        dataset = dataset or cfg.dataset["type"]
        recipe_workers = cfg.get("workers")
    size = dataset_class(dataset).typical_image_size if dataset else (500, 375)
    synthetic = data_root is None and size is not None
    with tempfile.TemporaryDirectory() as tmp:
        if synthetic:
            cfg = {"type": "imagefolder", "data_root": str(write_synthetic_jpegs(Path(tmp), size=size))}
        elif dataset is None:
            raise CncnnError("--data-root needs a recipe or --dataset that says how to read it")
        else:
            cfg = {"type": dataset, "data_root": data_root or ""}
        result = loader_throughput(cfg, image_size=image_size or 448, seconds=seconds, show_progress=True,
                                   preprocess=preprocess, gpu_decode=gpu_decode)
    if synthetic:
        result["dataset"] = f"synthetic {size[0]}x{size[1]} JPEGs" + (f" (like {dataset})" if dataset else "")
    result["cpus"] = os.cpu_count()
    if model_images_per_s is not None:
        chosen = workers if workers is not None else recipe_workers if recipe_workers is not None else DEFAULT_WORKERS
        result.update(bottleneck(result["images_per_s_per_worker"], chosen, model_images_per_s))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console = Console()
    work = f"resize {result['resize']} + random crop {result['crop']} + flip"
    if not gpu_decode:
        line = f"{result['images_per_s_per_worker']} images/s per worker (decode + {work}, one thread)"
    elif result["device_images_per_s"] is None:
        line = (f"{result['images_per_s_per_worker']} images/s per worker: no plain JPEG files, so the workers "
                f"decode ({work}) with --gpu-decode too")
    else:
        line = (f"{result['images_per_s_per_worker']} images/s per worker reading files; {result['device']} decodes "
                f"+ {work} {result['device_images_per_s']} images/s")
    console.print(f"{result['dataset']}: {line}", markup=False, highlight=False, soft_wrap=True)
    if model_images_per_s is not None:
        console.print(_bottleneck_line(result), markup=False, highlight=False, soft_wrap=True)


def _bottleneck_line(result: dict) -> str:
    verdict = ("the loader is the bottleneck" if result["bottleneck"] == "loader"
               else "the model is the bottleneck (the loader keeps up)")
    return (f"{result['workers']} workers load ~{result['loader_images_per_s']} images/s against the model's "
            f"{result['model_images_per_s']}: {verdict}; {result['workers_needed']} workers keep up"
            + (f" (this machine has {result['cpus']} CPUs)" if result["workers_needed"] > (result["cpus"] or 1)
               else ""))
