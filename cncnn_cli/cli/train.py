"""``cncnn train``: the main job. Its options are shared with ``cncnn ablate``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cncnn_cli.cli.common import complete_recipe, invocation
from cncnn_cli.cli.training_options import training_command

ResumeOpt = Annotated[Optional[str], typer.Option(
    help="Continue the run in the work dir (`--resume`), or from a given state.pth (`--resume PATH`). "
         "The schedule is the saved one: resume with the same --epochs.")]


@training_command()
def train(
    recipe: Annotated[str, typer.Argument(help="Recipe file or bundled name (`cncnn recipes`).", show_default=False,
                                          autocompletion=complete_recipe)],
    resume: ResumeOpt = None,
    *,
    flags: dict[str, Any],
    cfg_options: list[str] | None,
) -> None:
    """Train CN-CNN with a recipe; the work dir gets best/last .safetensors, metrics.json, state.pth, logs.

    Order of precedence: the recipe, then these flags, then --cfg-options.

    Example: cncnn train demo

    Example: cncnn train recipes/aircraft.py --data-root ~/data --amp

    Example: cncnn train cub --val-fraction 0.1 --batch-size 8 --accumulate 2

    Example: torchrun --nproc_per_node 4 -m cncnn_cli train cub --launcher pytorch --sync-bn

    Example: srun python -m cncnn_cli train cub --launcher slurm --vis-backend mlflow
    """
    from cncnn_cli.config.resolve import resolve_config
    from cncnn_cli.engine.plan import prepare
    from cncnn_cli.engine.runner import default_work_dir
    from cncnn_cli.engine.training import run_training

    cfg = resolve_config(recipe, flags, cfg_options)
    run = prepare(cfg)
    command = invocation()
    resume_command = command if "--resume" in command else [*command, "--resume"]
    code = run_training(cfg, run, Path(cfg.work_dir or default_work_dir(recipe)), resume, resume_command)
    if code:
        raise typer.Exit(code)
