"""``cncnn train``: the main job. Its options are shared with ``cncnn ablate``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from cncnn_cli.cli.common import CompileOption, PluginOption, complete_recipe, invocation, setup
from cncnn_cli.errors import CncnnError

WorkDirOpt = Annotated[Optional[Path], typer.Option(help="Output folder (default: work_dirs/<recipe name>).")]
ResumeOpt = Annotated[Optional[str], typer.Option(
    help="Continue the run in the work dir (`--resume`), or from a given state.pth (`--resume PATH`). "
         "The schedule is the saved one: resume with the same --epochs.")]
DatasetOpt = Annotated[Optional[str], typer.Option(help="Dataset plugin (cub, cars, aircraft, imagefolder, demo).")]
DataRootOpt = Annotated[Optional[str], typer.Option(help="The extracted dataset folder or its parent.")]
EpochsOpt = Annotated[Optional[int], typer.Option(min=1, help="Training epochs.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    min=1, help="Images per forward pass per process; × processes × --accumulate = the effective batch.")]
LrOpt = Annotated[Optional[float], typer.Option(
    help="Learning rate of the new modules at the recipe's batch (scaled with the effective batch unless "
         "--no-scale-lr); the backbone keeps its ratio.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option(help="Crop size (multiple of 32); the resize scales with it.")]
BackboneOpt = Annotated[Optional[str], typer.Option(
    help="Backbone plugin (resnet50), or timm:NAME for a timm model (timm:convnext_tiny; needs the timm extra).")]
PretrainedOpt = Annotated[Optional[str], typer.Option(
    help="Backbone weights: a torchvision enum name (IMAGENET1K_V1) or a file (torchvision or timm weights).")]
NoPretrainedOpt = Annotated[bool, typer.Option("--no-pretrained", help="Train the backbone from scratch.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")]
AmpOpt = Annotated[bool, typer.Option("--amp", help="bf16 autocast (fp16 + loss scaling on GPUs without bf16).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed of initialization, shuffling and augmentation.")]
WorkersOpt = Annotated[Optional[int], typer.Option(min=0, help="Data loader processes.")]
CfgOptionsOpt = Annotated[Optional[list[str]], typer.Option(
    help="key=value overrides applied last, e.g. train_cfg.val_interval=5 (repeatable).")]
LauncherOpt = Annotated[Optional[str], typer.Option(
    help="none, pytorch under torchrun, or slurm under srun (one task per GPU; README: Clusters).")]
VisBackendOpt = Annotated[Optional[list[str]], typer.Option(
    help="Experiment tracker: tensorboard, wandb, mlflow, clearml, dvclive or aim (repeatable; default: "
         "tensorboard if installed). Options through --cfg-options vis_backends.0.tracking_uri=...")]
ValFractionOpt = Annotated[Optional[float], typer.Option(
    min=0.0, max=0.9, help="Hold out this class-stratified fraction of the training images (drawn from --seed) "
    "to choose the best checkpoint; the test split is then evaluated once, at the end.")]
ValSplitOpt = Annotated[Optional[str], typer.Option(
    help="Choose the best checkpoint on the dataset's published val split (aircraft: train on 'train').")]
AccumulateOpt = Annotated[Optional[int], typer.Option(
    min=1, help="Accumulate gradients over N batches per optimizer step (effective batch × N).")]
EffectiveBatchOpt = Annotated[Optional[int], typer.Option(
    min=1, help="Total images per optimizer step; the accumulation follows from --batch-size and processes.")]
SyncBnOpt = Annotated[bool, typer.Option(
    "--sync-bn", help="BatchNorm statistics over all processes (DDP on CUDA); no effect in one process.")]
GpuDecodeOpt = Annotated[bool, typer.Option(
    "--gpu-decode", help="Decode JPEGs (nvJPEG), resize and crop on the GPU; the loader workers only read files. "
                         "For when the CPUs cannot feed the model (`cncnn data speed`).")]
Fp32PrecisionOpt = Annotated[Optional[Literal["high", "highest"]], typer.Option(
    show_default=False, help="CUDA fp32 matmuls and convolutions: high = TF32 (the default, faster), highest = full fp32.")]
NoScaleLrOpt = Annotated[bool, typer.Option(
    "--no-scale-lr", help="Keep the recipe's learning rates when the effective batch differs from its batch.")]


def train(
    recipe: Annotated[str, typer.Argument(help="Recipe file or bundled name (`cncnn recipes`).", show_default=False,
                                          autocompletion=complete_recipe)],
    work_dir: WorkDirOpt = None,
    resume: ResumeOpt = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    image_size: ImageSizeOpt = None,
    backbone: BackboneOpt = None,
    pretrained: PretrainedOpt = None,
    no_pretrained: NoPretrainedOpt = False,
    device: DeviceOpt = None,
    amp: AmpOpt = False,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    cfg_options: CfgOptionsOpt = None,
    launcher: LauncherOpt = None,
    val_fraction: ValFractionOpt = None,
    val_split: ValSplitOpt = None,
    accumulate: AccumulateOpt = None,
    effective_batch: EffectiveBatchOpt = None,
    no_scale_lr: NoScaleLrOpt = False,
    sync_bn: SyncBnOpt = False,
    compile: CompileOption = False,
    gpu_decode: GpuDecodeOpt = False,
    fp32_precision: Fp32PrecisionOpt = None,
    vis_backend: VisBackendOpt = None,
    plugin: PluginOption = None,
) -> None:
    """Train CN-CNN with a recipe; the work dir gets best/last .safetensors, metrics.json, state.pth, logs.

    Order of precedence: the recipe, then these flags, then --cfg-options.

    Example: cncnn train demo

    Example: cncnn train recipes/aircraft.py --data-root ~/data --amp

    Example: cncnn train cub --val-fraction 0.1 --batch-size 8 --accumulate 2

    Example: torchrun --nproc_per_node 4 -m cncnn_cli train cub --launcher pytorch --sync-bn

    Example: srun python -m cncnn_cli train cub --launcher slurm --vis-backend mlflow
    """
    setup(plugin)
    from cncnn_cli.config.resolve import resolve_config
    from cncnn_cli.engine.runner import default_work_dir
    from cncnn_cli.engine.training import run_training

    flags = train_flags(dataset=dataset, data_root=data_root, epochs=epochs, batch_size=batch_size, lr=lr,
                        image_size=image_size, backbone=backbone, pretrained=pretrained, no_pretrained=no_pretrained,
                        device=device, amp=amp, seed=seed, workers=workers, launcher=launcher, work_dir=work_dir,
                        val_fraction=val_fraction, val_split=val_split, accumulate=accumulate,
                        effective_batch=effective_batch, no_scale_lr=no_scale_lr, sync_bn=sync_bn,
                        fp32_precision=fp32_precision, vis_backend=vis_backend, compile=compile,
                        gpu_decode=gpu_decode)
    cfg = resolve_config(recipe, flags, cfg_options)
    command = invocation()
    resume_command = command if "--resume" in command else [*command, "--resume"]
    code = run_training(cfg, Path(cfg.work_dir or default_work_dir(recipe)), resume, resume_command)
    if code:
        raise typer.Exit(code)


def train_flags(*, pretrained: str | None, no_pretrained: bool, work_dir: Path | None, **flags) -> dict:
    """The flags in the form ``resolve_config`` takes (None = not given)."""
    if no_pretrained and pretrained:
        raise CncnnError("give either --pretrained or --no-pretrained, not both")
    return dict(flags, work_dir=str(work_dir) if work_dir else None,
                pretrained=None if no_pretrained else (pretrained or "recipe"))
