"""Training the ablation variants and tabulating them beside the paper's numbers."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.table import Table

from cncnn_cli.atomic import atomic_write
from cncnn_cli.benchmark import count_flops
from cncnn_cli.checkpoint import load_model
from cncnn_cli.commands.common import err_console
from cncnn_cli.config import resolve_config, validate_model
from cncnn_cli.engine.hooks import STATE_FILE, write_json_atomic
from cncnn_cli.training import is_finished, run_training
from cncnn_cli.transforms import size_pair
from cncnn_cli.variants import PAPER_CUB_TOP1, VARIANTS, variant_model


def run_ablation(recipe: str, variants: list[str], flags: dict, cfg_options: list[str] | None, root: Path,
                 command: list[str]) -> tuple[int, Table | None]:
    """Train each variant in ``root/<variant>`` (skipping finished ones, resuming interrupted ones).

    Returns the exit code and, when every requested variant finished, the results table.
    """
    for variant in variants:
        cfg = resolve_config(recipe, flags, cfg_options)
        cfg.model = variant_model(cfg.model, variant)
        validate_model(cfg.model)
        run_dir = root / variant
        if is_finished(run_dir, cfg.train_cfg["max_epochs"]):
            err_console.print(f"{variant}: already trained in {run_dir}, skipped", highlight=False, soft_wrap=True)
            continue
        resume = "auto" if (run_dir / STATE_FILE).is_file() else None
        err_console.print(f"{variant}: {'resuming' if resume else 'training'} in {run_dir}", highlight=False,
                          soft_wrap=True)
        code = run_training(cfg, run_dir, resume, command)
        if code:
            return code, None
    rows = collect_rows(root)
    write_json_atomic(root / "ablation.json", rows)
    with atomic_write(root / "ablation.md") as tmp:
        tmp.write_text(markdown_table(rows))
    return 0, rich_table(rows)


def collect_rows(root: Path) -> list[dict]:
    """One row per finished variant under ``root``, in the paper's order."""
    rows = []
    for variant in VARIANTS:
        run_dir = root / variant
        if not (run_dir / "metrics.json").is_file() or not (run_dir / "best.safetensors").is_file():
            continue
        metrics = json.loads((run_dir / "metrics.json").read_text())
        best = metrics["best"]
        model, info = load_model(run_dir / "best.safetensors")
        crop = size_pair(info.preprocess["crop"])[0]
        rows.append({
            "variant": variant,
            "top1": best["top1"],
            "top5": best["top5"],
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": round(count_flops(model, crop, next(model.parameters()).device) / 1e9, 6),
            "train_images_per_s": round(statistics.mean(h["train_images_per_s"] for h in metrics["history"]), 2),
            "best_epoch": best["epoch"],
        })
    return rows


def _cells(row: dict) -> list[str]:
    return [row["variant"], f"{row['top1']:.2f}", f"{row['top5']:.2f}", f"{PAPER_CUB_TOP1[row['variant']]:.1f}",
            f"{row['params'] / 1e6:.2f}", f"{row['gflops']:.3g}", f"{row['train_images_per_s']:.1f}",
            str(row["best_epoch"])]


HEADERS = ["variant", "top-1", "top-5", "paper top-1", "params (M)", "GFLOPs", "train img/s", "best epoch"]


def rich_table(rows: list[dict]) -> Table:
    table = Table(title="cncnn ablate", caption="paper top-1: the paper's CUB-200-2011 result with ResNet-50 "
                  "(Tables 2, 3), for reference; every other column is this run's")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "variant" else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    note = ("\nThe paper column is the paper's own CUB-200-2011 top-1 (ResNet-50, Tables 2 and 3), shown for "
            "reference; the other columns are this run's. Best epoch selected on the test split, as in the paper.\n")
    return "\n".join(lines) + "\n" + note
