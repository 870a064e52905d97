"""``cncnn train``: the main job."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from cncnn_cli.commands.common import PluginOption, err_console, invocation, setup
from cncnn_cli.errors import CncnnError

DEVICE_HELP = "auto, cpu, cuda or cuda:N."


def train(
    recipe: Annotated[str, typer.Argument(help="Recipe file or bundled name (`cncnn recipes`).", show_default=False)],
    work_dir: Annotated[Optional[Path], typer.Option(help="Output folder [default: work_dirs/<recipe name>].")] = None,
    resume: Annotated[Optional[str], typer.Option(
        help="Continue the run in the work dir (`--resume`), or from a given state.pth (`--resume PATH`). "
             "The schedule is the saved one: resume with the same --epochs.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset plugin (cub, cars, aircraft, imagefolder, demo).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="The extracted dataset folder or its parent.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per step (per process).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Learning rate of the new modules; the backbone keeps its ratio (0.01×).")] = None,
    image_size: Annotated[Optional[int], typer.Option(
        help="Crop size (multiple of 32); the resize scales with it.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone plugin, e.g. resnet50.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        help="Backbone weights: a torchvision enum name (IMAGENET1K_V1) or a file.")] = None,
    no_pretrained: Annotated[bool, typer.Option("--no-pretrained", help="Train the backbone from scratch.")] = False,
    device: Annotated[Optional[str], typer.Option(help=DEVICE_HELP)] = None,
    amp: Annotated[bool, typer.Option("--amp", help="bf16 autocast (fp16 + loss scaling on GPUs without bf16).")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Seed of initialization, shuffling and augmentation.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="Data loader processes.")] = None,
    cfg_options: Annotated[Optional[list[str]], typer.Option(
        help="key=value overrides applied last, e.g. train_cfg.val_interval=5 (repeatable).")] = None,
    launcher: Annotated[Optional[str], typer.Option(help="none, or pytorch under torchrun.")] = None,
    plugin: PluginOption = None,
) -> None:
    """Train CN-CNN with a recipe; the work dir gets best/last .safetensors, metrics.json, state.pth, logs.

    Example: cncnn train demo

    Example: cncnn train recipes/aircraft.py --data-root ~/data --amp

    Example: torchrun --nproc_per_node 4 -m cncnn_cli train cub --launcher pytorch
    """
    setup(plugin)
    from cncnn_cli.config import resolve_config
    from cncnn_cli.engine.runner import build_runner, default_work_dir, resume_path
    from cncnn_cli.engine.signals import StopRequest, TrainingInterrupted
    from mmengine.dist import is_main_process

    flags = dict(dataset=dataset, data_root=data_root, epochs=epochs, batch_size=batch_size, lr=lr,
                 image_size=image_size, backbone=backbone, device=device, amp=amp, seed=seed, workers=workers,
                 launcher=launcher, work_dir=str(work_dir) if work_dir else None,
                 pretrained=None if no_pretrained else (pretrained or "recipe"))
    if no_pretrained and pretrained:
        raise CncnnError("give either --pretrained or --no-pretrained, not both")
    cfg = resolve_config(recipe, flags, cfg_options)
    run_dir = Path(cfg.work_dir or default_work_dir(recipe))
    state = resume_path(run_dir, resume)
    if state is None and (run_dir / "state.pth").exists():
        raise CncnnError(f"{run_dir} already holds a run. Continue it with --resume, pick another --work-dir, "
                         f"or delete the folder to start over.")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(run_dir / "config.py"))
    stop = StopRequest()
    stop.install()
    try:
        runner = build_runner(cfg, run_dir, state, stop)
        runner.train()
    except TrainingInterrupted as exc:
        if is_main_process():
            command = invocation()
            if "--resume" not in command:
                command = command + ["--resume"]
            err_console.print(f"interrupted: saved {run_dir}/state.pth and last.safetensors. Resume with:\n"
                              f"  cncnn {shlex.join(command)}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    finally:
        stop.uninstall()
    if is_main_process():
        _summary(run_dir)


def _summary(run_dir: Path) -> None:
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    best, last = metrics.get("best"), metrics.get("last")
    if best:
        err_console.print(f"best top-1 {best['top1']:.2f} at epoch {best['epoch']} (selected on {best['selected_on']}); "
                          f"last epoch top-1 {last['top1']:.2f}", highlight=False, soft_wrap=True)
    err_console.print(f"wrote {run_dir}/best.safetensors, last.safetensors, metrics.json", highlight=False,
                      markup=False, soft_wrap=True)
