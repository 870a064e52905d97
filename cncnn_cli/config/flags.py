"""The training flags of ``cncnn train`` and ``cncnn ablate``, each declared once.

A :class:`Flag` holds what the command line shows (option, type, help) and the recipe key the
value lands in. The CLI builds its options from :data:`FLAGS`; ``apply_flags`` applies them in
this order, and a value that fails validation is blamed on the flag whose key it is. Plain data:
importing this module loads nothing heavy (``cncnn train --help`` and completion read it).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cncnn_cli.errors import CncnnError


@dataclass(frozen=True)
class Flag:
    """One training flag: ``--name`` (underscores as dashes) of ``type``; ``bool`` is an on-switch,
    ``Path`` a folder (the CLI checks that it is not a file; the config holds it as a string)."""

    name: str
    type: Any
    help: str
    #: The dotted recipe key the flag sets.
    key: str
    min: float | None = None
    max: float | None = None
    #: The flag that chooses the same thing another way: giving both is an error; where the two
    #: set different keys, giving one resets the other's key to its ``off`` value (what the
    #: recipe means by "not this way").
    either: str | None = None
    off: Any = None

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    @property
    def switch(self) -> bool:
        return self.type is bool


#: In ``--help`` order, which is also the order they apply in: ``--dataset`` before ``--data-root``,
#: ``--backbone`` before ``--pretrained``.
FLAGS: tuple[Flag, ...] = (
    Flag("work_dir", Path, "Output folder (default: work_dirs/<recipe name>).", "work_dir"),
    Flag("dataset", str, "Dataset plugin (cub, cars, aircraft, imagefolder, demo).", "dataset.type"),
    Flag("data_root", Path, "The extracted dataset folder or its parent.", "dataset.data_root"),
    Flag("epochs", int, "Training epochs.", "train_cfg.max_epochs", min=1),
    Flag("batch_size", int, "Images per forward pass per process; × processes × --accumulate = the effective batch.",
         "batch_size", min=1),
    Flag("lr", float, "Learning rate of the new modules at the recipe's batch (scaled with the effective batch "
         "unless --no-scale-lr); the backbone keeps its ratio.", "optim_wrapper.optimizer.lr"),
    Flag("image_size", int, "Crop size (multiple of 32); the resize scales with it.", "preprocess.crop"),
    Flag("backbone", str, "Backbone plugin (resnet50), or timm:NAME for a timm model (timm:convnext_tiny; needs "
         "the timm extra).", "model.backbone"),
    Flag("pretrained", str, "Backbone weights: a torchvision enum name (IMAGENET1K_V1) or a file (torchvision or "
         "timm weights).", "model.backbone.pretrained", either="no_pretrained"),
    Flag("no_pretrained", bool, "Train the backbone from scratch.", "model.backbone.pretrained", either="pretrained"),
    Flag("device", str, "auto, cpu, cuda or cuda:N.", "device"),
    Flag("amp", bool, "bf16 autocast (fp16 + loss scaling on GPUs without bf16).", "amp"),
    Flag("seed", int, "Seed of initialization, shuffling and augmentation.", "seed"),
    Flag("workers", int, "Data loader processes.", "workers", min=0),
    Flag("launcher", str, "none, pytorch under torchrun, or slurm under srun (one task per GPU; docs/cluster.md).",
         "launcher"),
    Flag("val_fraction", float, "Hold out this class-stratified fraction of the training images (drawn from "
         "--seed) to choose the best checkpoint; the test split is then evaluated once, at the end.",
         "val_fraction", min=0.0, max=0.9, either="val_split", off=0.0),
    Flag("val_split", str, "Choose the best checkpoint on the dataset's published val split (aircraft: train on "
         "'train').", "val_split", either="val_fraction"),
    Flag("accumulate", int, "Accumulate gradients over N batches per optimizer step (effective batch × N).",
         "accumulate", min=1, either="effective_batch", off=1),
    Flag("effective_batch", int, "Total images per optimizer step; the accumulation follows from --batch-size and "
         "processes.", "effective_batch", min=1, either="accumulate"),
    Flag("no_scale_lr", bool, "Keep the recipe's learning rates when the effective batch differs from its batch.",
         "auto_scale_lr.enable"),
    Flag("sync_bn", bool, "BatchNorm statistics over all processes (DDP on CUDA); no effect in one process.",
         "sync_bn"),
    Flag("compile", bool, "Run the model under torch.compile (inductor: needs a C++ compiler on CPU, Triton on "
         "CUDA); the first batch compiles first.", "compile"),
    Flag("gpu_decode", bool, "Decode JPEGs (nvJPEG), resize and crop on the GPU; the loader workers only read "
         "files. For when the CPUs cannot feed the model (`cncnn data speed`).", "gpu_decode"),
    Flag("retrieval", bool, "Also Recall@1/2/4/8 and MAP@R of the image embedding at every evaluation, into "
         "metrics.json and the trackers (leave-one-out; docs/beyond-top1.md).", "retrieval"),
    Flag("fp32_precision", Literal["high", "highest"], "CUDA fp32 matmuls and convolutions: high = TF32 (the "
         "default, faster), highest = full fp32.", "fp32_precision"),
    Flag("vis_backend", list[str], "Experiment tracker: tensorboard, wandb, mlflow, clearml, dvclive or aim "
         "(repeatable; default: tensorboard if installed). Options through --cfg-options "
         "vis_backends.0.tracking_uri=...", "vis_backends"),
)

FLAG_BY_NAME: dict[str, Flag] = {flag.name: flag for flag in FLAGS}


def given_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    """The flags of a command line that were given (not None, a switch on), by name.

    Two flags that choose one thing two ways are an error here, before anything is loaded.
    """
    given = {name: value for name, value in values.items() if value is not None and value is not False}
    check_either(given)
    return given


def check_either(given: Mapping[str, Any]) -> None:
    """``give either --a or --b, not both`` for the first such pair in ``given``."""
    for flag in FLAGS:
        if flag.either and flag.name in given and flag.either in given:
            raise CncnnError(f"give either {flag.option} or {FLAG_BY_NAME[flag.either].option}, not both")
