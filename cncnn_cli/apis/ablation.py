"""Training the ablation variants and tabulating them beside the paper's numbers."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from rich.table import Table

from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.apis.benchmark import count_flops
from cncnn_cli.weights.checkpoint import load_model
from cncnn_cli.utils.console import say
from cncnn_cli.config.resolve import resolve_config, validate_model
from cncnn_cli.engine.hooks import STATE_FILE, write_json_atomic
from cncnn_cli.engine.plan import prepare
from cncnn_cli.errors import CncnnError
from cncnn_cli.engine.training import is_finished, run_training
from cncnn_cli.data.transforms import size_pair
from cncnn_cli.models.variants import PAPER_CUB_TOP1, VARIANTS, variant_model


def run_dirs(root: Path, variant: str, seeds: int | None) -> list[tuple[int | None, Path]]:
    """``(seed, run dir)`` of a variant: ``root/<variant>``, or ``root/<variant>/seed<k>`` with ``--seeds``."""
    if seeds is None:
        return [(None, root / variant)]
    return [(seed, root / variant / f"seed{seed}") for seed in range(seeds)]


def run_ablation(recipe: str, variants: list[str], flags: dict, cfg_options: list[str] | None, root: Path,
                 command: list[str], seeds: int | None = None) -> tuple[int, Table | None]:
    """Train each variant (and seed) in its run dir, skipping finished runs and resuming interrupted ones.

    Returns the exit code and, when every requested run finished, the results table. Each run
    is announced as ``[k/N]`` with the time left, estimated from the runs trained so far.
    """
    runs = [(variant, seed, run_dir) for variant in variants for seed, run_dir in run_dirs(root, variant, seeds)]
    durations: dict[str, list[float]] = {}
    for index, (variant, seed, run_dir) in enumerate(runs, 1):
        cfg = resolve_config(recipe, flags if seed is None else {**flags, "seed": seed}, cfg_options)
        cfg.model = variant_model(cfg.model, variant)
        validate_model(cfg.model)
        run = prepare(cfg)  # each variant's own: its errors come before its run dir exists
        name = f"[{index}/{len(runs)}] {variant if seed is None else f'{variant} seed {seed}'}"
        if is_finished(run_dir, cfg.train_cfg["max_epochs"]):
            _same_selection(run_dir, "val" if cfg.val_fraction or cfg.val_split else "test")
            say(f"{name}: already trained in {run_dir}, skipped")
            continue
        resume = "auto" if (run_dir / STATE_FILE).is_file() else None
        say(f"{name}: {'resuming' if resume else 'training'} in {run_dir}{time_left(durations, runs[index - 1:])}")
        start = time.perf_counter()
        code = run_training(cfg, run, run_dir, resume, command)
        if code:
            return code, None
        durations.setdefault(variant, []).append(time.perf_counter() - start)
    rows = collect_rows(root, seeds)
    write_json_atomic(root / "ablation.json", rows)
    with atomic_write(root / "ablation.md") as tmp:
        tmp.write_text(markdown_table(rows))
    return 0, rich_table(rows)


def time_left(durations: dict[str, list[float]], remaining: list[tuple]) -> str:
    """``"; about N min left ..."`` for the ``remaining`` runs, from the runs trained so far.

    Each remaining run takes the mean of its variant's finished runs. A variant not trained yet
    takes the costliest variant's mean: the variants run cheapest first (baseline → full), so
    the figure is then a lower bound, and says "at least".
    """
    if not durations:
        return ""
    means = {variant: statistics.mean(times) for variant, times in durations.items()}
    unseen = {variant for variant, *_ in remaining} - set(means)
    seconds = sum(means.get(variant, max(means.values())) for variant, *_ in remaining)
    return f"; {'at least' if unseen else 'about'} {_minutes(seconds)} left for this and the remaining runs"


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _same_selection(run_dir: Path, selected_on: str) -> None:
    """A finished run joins the table only if it chose its checkpoint the way this invocation asks."""
    found = json.loads((run_dir / "metrics.json").read_text())["best"]["selected_on"]
    if found != selected_on:
        raise CncnnError(f"{run_dir} holds a run whose checkpoint was chosen on {found}, but this ablation "
                         f"chooses on {selected_on}; give another --work-dir so the table does not mix them")


def run_result(run_dir: Path, seed: int | None) -> dict:
    """What one run reports: the test accuracy of its chosen checkpoint, and of its last epoch."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best, last = metrics["best"], metrics["last"]
    tested = metrics.get("test_at_best_val") or best
    return {"seed": metrics.get("seed", seed), "top1": tested["top1"], "top5": tested["top5"],
            "best_epoch": best["epoch"], "selected_on": best["selected_on"], "last_top1": last["top1"],
            "last_split": last.get("split", "test"),
            "train_images_per_s": statistics.mean(h["train_images_per_s"] for h in metrics["history"])}


def collect_rows(root: Path, seeds: int | None = None) -> list[dict]:
    """One row per variant whose runs under ``root`` all finished, in the paper's order.

    With several seeds, accuracies are the mean and the sample standard deviation (n - 1)
    over the seeds; each seed's own numbers are kept under ``runs``.
    """
    rows = []
    for variant in VARIANTS:
        dirs = run_dirs(root, variant, seeds)
        if not all((d / "metrics.json").is_file() and (d / "best.safetensors").is_file() for _, d in dirs):
            continue
        runs = [run_result(run_dir, seed) for seed, run_dir in dirs]
        model, info = load_model(dirs[0][1] / "best.safetensors")
        crop = size_pair(info.preprocess["crop"])[0]
        rows.append({
            "variant": variant,
            **_spread(runs, "top1"),
            **_spread(runs, "top5"),
            **_spread(runs, "last_top1"),
            "selected_on": runs[0]["selected_on"],
            "last_split": runs[0]["last_split"],
            "tta": "none",
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": round(count_flops(model, crop, next(model.parameters()).device) / 1e9, 6),
            "train_images_per_s": round(statistics.mean(r["train_images_per_s"] for r in runs), 2),
            "runs": [{k: v for k, v in r.items() if k not in ("selected_on", "last_split")} for r in runs],
        })
    return rows


def _spread(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    std = statistics.stdev(values) if len(values) > 1 else None
    return {key: round(statistics.mean(values), 4), f"{key}_std": None if std is None else round(std, 4)}


def _accuracy(row: dict, key: str) -> str:
    std = row[f"{key}_std"]
    return f"{row[key]:.2f}" if std is None else f"{row[key]:.2f} ± {std:.2f}"


def _cells(row: dict) -> list[str]:
    epochs = ", ".join(str(r["best_epoch"]) for r in row["runs"])
    return [row["variant"], _accuracy(row, "top1"), _accuracy(row, "top5"), _accuracy(row, "last_top1"),
            f"{PAPER_CUB_TOP1[row['variant']]:.1f}", f"{row['params'] / 1e6:.2f}", f"{row['gflops']:.3g}",
            f"{row['train_images_per_s']:.1f}", epochs]


HEADERS = ["variant", "top-1", "top-5", "last-epoch top-1", "paper top-1", "params (M)", "GFLOPs", "train img/s",
           "best epoch"]


def explanation(rows: list[dict]) -> str:
    """What the numbers are: which split chose the checkpoint, seeds, no test-time augmentation."""
    if not rows:
        return "No finished runs."
    row = rows[0]
    runs = len(row["runs"])
    chosen = ("top-1/top-5: the test split, evaluated once on the checkpoint chosen on a held-out validation set"
              if row["selected_on"] == "val" else
              "top-1/top-5: the best epoch on the test split, chosen on the test split as in the paper (optimistic)")
    spread = f"; mean ± sample std over {runs} seeds" if runs > 1 else "; one seed"
    return (f"{chosen}; last-epoch top-1 on the {row['last_split']} split{spread}; single center crop, no "
            f"test-time augmentation. paper top-1: the paper's CUB-200-2011 ResNet-50 result (Tables 2, 3), "
            f"for reference; every other column is this run's.")


def rich_table(rows: list[dict]) -> Table:
    table = Table(title="cncnn ablate", caption=explanation(rows))
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "variant" else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + explanation(rows) + "\n"
