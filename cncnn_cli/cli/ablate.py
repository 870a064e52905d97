"""``cncnn ablate``: the paper's Tables 2 and 3 in one command."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cncnn_cli.cli.common import complete_recipe, err_console, folder_path, invocation, out_console
from cncnn_cli.cli.training_options import training_command
from cncnn_cli.errors import CncnnError


@training_command(without=("work_dir",))
def ablate(
    recipe: Annotated[str, typer.Argument(help="Recipe file or bundled name; the paper ablated on cub.",
                                          autocompletion=complete_recipe)] = "cub",
    no_convlstm: Annotated[bool, typer.Option("--no-convlstm", help="HL by feature sums (Table 3's w/o ConvLSTM).")] = False,
    no_attention: Annotated[bool, typer.Option("--no-attention", help="With --no-convlstm: no LH pathway (Table 2's HL).")] = False,
    baseline: Annotated[bool, typer.Option("--baseline", help="The fine-tuned backbone alone (GAP + FC).")] = False,
    all_variants: Annotated[bool, typer.Option("--all", help="Train baseline, hl, hl+lh and full in turn, then tabulate.")] = False,
    seeds: Annotated[int | None, typer.Option(min=1, help="Train each variant with seeds 0..N-1 (WORK_DIR/<variant>/seed<k>/); the table shows mean ± std.")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Output folder (default: work_dirs/ablate_<recipe>); one subfolder per variant.", callback=folder_path)] = None,
    *,
    flags: dict[str, Any],
    cfg_options: list[str] | None,
) -> None:
    """Train ablation variants like `train`, each in WORK_DIR/<variant>/; --all adds ablation.json and .md.

    Variants: full (no flag), hl+lh (--no-convlstm), hl (--no-convlstm --no-attention), baseline (--baseline).
    A finished variant is not trained again; an interrupted one resumes. Accuracies are of a single
    center crop (no test-time flips); `cncnn eval --tta flip` adds those for one checkpoint.

    Example: cncnn ablate --no-convlstm

    Example: cncnn ablate demo --all --epochs 3

    Example: cncnn ablate cub --all --seeds 3 --val-fraction 0.1
    """
    from cncnn_cli.apis.ablation import run_ablation
    from cncnn_cli.models.variants import VARIANTS, select_variant

    variants = list(VARIANTS) if all_variants else [select_variant(no_convlstm, no_attention, baseline)]
    if seeds is not None and "seed" in flags:
        raise CncnnError("give either --seed (one run per variant) or --seeds N (seeds 0..N-1), not both")
    root = work_dir or Path("work_dirs") / f"ablate_{Path(recipe).stem}"
    code, table = run_ablation(recipe, variants, flags, cfg_options, root, invocation(), seeds)
    if table is not None:
        out_console.print(table)
    if code:
        raise typer.Exit(code)
    err_console.print(f"wrote {root / 'ablation.json'} and {root / 'ablation.md'}", markup=False, highlight=False,
                      soft_wrap=True)
