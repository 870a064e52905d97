"""From a resolved config to a finished (or cleanly interrupted) mmengine run."""
from __future__ import annotations

import logging
import platform
import time
import sys
from pathlib import Path

import mmengine
import torch
import torchvision
from mmengine.config import Config
from mmengine.runner import Runner, set_random_seed

from cncnn_cli import __version__
from cncnn_cli.data import gpu_decode
from cncnn_cli.weights.checkpoint import Checkpoint
from cncnn_cli.engine import amp
from cncnn_cli.engine.mmengine_compat import mmengine_loggers, no_config_dump, place_mmengine_on
from cncnn_cli.engine.batching import BatchPlan, describe, mmengine_auto_scale_lr
from cncnn_cli.engine.embedding_hook import EmbeddingHook
from cncnn_cli.engine.sampling import ResumableSampler, SeededAugmentation  # noqa: F401  (registers the sampler)
from cncnn_cli.engine.hooks import (  # also registers DeferredRuntimeInfoHook
    STATE_FILE, ConsoleHook, ResumeCheckHook, StopHook, WorkDirHook)
from cncnn_cli.engine.loader import loader_config
from cncnn_cli.engine.precision import apply_fp32_precision, describe_fp32_precision, uses_channels_last
from cncnn_cli.engine.protocol import build_datasets
from cncnn_cli.engine.signals import StopRequest
from cncnn_cli.engine.launch import export_slurm_environment
from cncnn_cli.engine.plan import RunPlan
from cncnn_cli.engine.trackers import TrackerHook
from cncnn_cli.engine.sync_bn import convert_sync_batchnorm
from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.models.classifier import build_model
from cncnn_cli.models.compile import compile_model

import cncnn_cli.data.collate  # noqa: F401,E402  (registers the collate function)
import cncnn_cli.evaluation.metrics  # noqa: F401,E402  (registers the accuracy metric)


def default_work_dir(recipe: str | Path) -> Path:
    return Path("work_dirs") / Path(str(recipe)).stem


def resume_path(work_dir: Path, resume: str | None) -> Path | None:
    """``--resume`` alone: the work dir's state; ``--resume PATH``: that file (or that run dir's state)."""
    if resume is None:
        return None
    path = work_dir / STATE_FILE if resume == "auto" else Path(resume)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise CncnnError(f"no resumable state at {path}; it is written after every epoch and on Ctrl-C. "
                         f"Start without --resume, or pass --resume PATH to a state.pth.")
    check_state_file(path)
    return path


def check_state_file(path: Path) -> None:
    """A :class:`CncnnError` naming ``path`` unless it is a state that ``cncnn train`` wrote.

    Read weights-only and memory-mapped: the pickle runs no code and the tensors stay on disk.
    """
    hint = (" It is a weights file; --resume takes the state.pth beside it." if path.suffix == ".safetensors"
            else " --resume takes the state.pth a cncnn train run writes in its work dir.")
    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":  # torch.save's zip container
            raise CncnnError(f"{path} is not a training state.{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file; torch raises many kinds
        raise CncnnError(f"{path} cannot be read as a training state ({first_line(exc)}).{hint}") from None
    if not isinstance(state, dict) or "cncnn" not in state:
        raise CncnnError(f"{path} was not written by cncnn train, so it cannot be resumed.{hint}")


def _setup_device(device: torch.device) -> None:
    place_mmengine_on(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True


def _init_distributed(device: torch.device) -> None:
    """mmengine's own init calls ``torch.cuda.set_device`` even on CPU: init gloo ourselves there."""
    if device.type == "cpu" and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")


def _route_logs() -> None:
    """After the Runner's start-up banner: INFO logs to the work dir's log file only; stderr gets
    warnings and our own progress lines; stdout stays clean."""
    for logger in mmengine_loggers():
        logger.setLevel(logging.INFO)
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr  # not setStream: it flushes the old, maybe closed, stream
                handler.setLevel(logging.WARNING)
                handler.addFilter(_drop_mmengine_notices)
            else:
                handler.setLevel(logging.INFO)


def _drop_mmengine_notices(record: logging.LogRecord) -> bool:
    """mmengine's own deprecation notices say nothing a cncnn user can act on."""
    message = record.getMessage()
    return not any(notice in message for notice in ("FileClient", "HardDiskBackend", "registry tree", "has no metainfo",
                                                 "save_param_scheduler"))


def run_info(cfg: Config, device: torch.device, plan: BatchPlan) -> dict:
    return {
        "seed": cfg.seed,
        "batch": plan.to_dict(),
        "selection": {"val_fraction": cfg.val_fraction, "val_split": cfg.val_split},
        "gpu_decode": cfg.gpu_decode,
        "versions": {"cncnn": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "mmengine": mmengine.__version__, "python": platform.python_version()},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
    }


def build_runner(cfg: Config, run: RunPlan, work_dir: Path, resume_from: Path | None, stop: StopRequest) -> Runner:
    """The mmengine Runner of ``cfg`` on this machine as ``run`` (:func:`~cncnn_cli.engine.plan.prepare`) plans it."""
    if cfg.launcher == "slurm":
        export_slurm_environment()  # mmengine's init reads torch's variables; it then needs no scontrol
    device, plan = run.device, run.batch
    _setup_device(device)
    if cfg.launcher != "none":
        _init_distributed(device)
    set_random_seed(cfg.seed)
    data = build_datasets(cfg, plan.effective)
    model_cfg = dict(cfg.model, num_classes=len(data.classes))
    if cfg.model.get("num_classes") not in (None, len(data.classes)) and run.first_rank:
        print(f"note: the recipe says {cfg.model['num_classes']} classes; the dataset has {len(data.classes)}, "
              f"which the model uses", file=sys.stderr)  # once: the process group may not exist yet (CUDA)
    fp32 = apply_fp32_precision(device, cfg.fp32_precision)
    channels_last = uses_channels_last(device, cfg.amp)
    model_cfg["data_preprocessor"] = dict(mean=list(cfg.preprocess["mean"]), std=list(cfg.preprocess["std"]),
                                          channels_last=channels_last)
    model = build_model(model_cfg)
    if run.sync_bn:  # several CUDA processes
        model = convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:  # the forward, so that DDP and validation run it compiled too
        compile_model(model, device)
    cfg.model = model_cfg

    def checkpoint_info() -> Checkpoint:
        return Checkpoint(model=model_cfg, classes=data.classes, preprocess=dict(cfg.preprocess),
                          dataset=dict(cfg.dataset))

    optim_wrapper = dict(cfg.optim_wrapper, accumulative_counts=plan.accumulate)
    if run.amp_dtype is not None:
        optim_wrapper.update(amp.amp_wrapper_config(run.amp_dtype, device))
    note = describe(plan, cfg.optim_wrapper["optimizer"]["lr"])
    loader = loader_config(cfg.batch_size, cfg.workers, device, cfg.seed, run.rank)
    experiment = f"cncnn_{time.time_ns()}"  # mmengine keeps one Visualizer per name per process
    vis_backends = [dict(type="LocalVisBackend"), *(dict(backend) for backend in run.trackers)]  # trackers.py
    info = {**run_info(cfg, device, plan), **fp32}
    _route_logs()  # loggers of earlier runs in this process may hold a closed stream
    work_dir_hook = WorkDirHook(checkpoint_info, info, resume_from is not None, selected_on=data.selected_on,
                                interval=cfg.log_interval)
    with no_config_dump():  # cncnn writes config.py itself
        runner = Runner(
            model=model,
            work_dir=str(work_dir),
            experiment_name=experiment,
            train_dataloader=dict(loader, dataset=SeededAugmentation(data.train, cfg.seed), drop_last=True,
                                  sampler=dict(type="cncnn_train_sampler", shuffle=True, seed=cfg.seed,
                                               step=cfg.batch_size * plan.accumulate)),
            val_dataloader=dict(loader, dataset=data.selection, sampler=dict(type="DefaultSampler", shuffle=False)),
            val_evaluator=dict(type="cncnn_accuracy", retrieval=cfg.retrieval),
            **_final_test(data, loader, cfg.retrieval),
            optim_wrapper=optim_wrapper,
            param_scheduler=list(cfg.param_scheduler) or None,
            train_cfg=dict(cfg.train_cfg),
            auto_scale_lr=mmengine_auto_scale_lr(plan),
            val_cfg=dict(),
            default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=cfg.log_interval),
                               runtime_info=dict(type="DeferredRuntimeInfoHook", interval=cfg.log_interval)),
            custom_hooks=[
                work_dir_hook,
                StopHook(stop, work_dir_hook, cfg.batch_size, accumulate=plan.accumulate, interval=cfg.log_interval),
                ResumeCheckHook(info["batch"], info["selection"]),
                ConsoleHook(cfg.log_interval),
                TrackerHook(run.trackers),
                *([EmbeddingHook(len(data.classes))] if cfg.retrieval else []),
                *cfg.custom_hooks,
            ],
            load_from=str(resume_from) if resume_from else None,
            resume=resume_from is not None,
            launcher=cfg.launcher,
            env_cfg=dict(cudnn_benchmark=device.type == "cuda",
                         dist_cfg=dict(backend="nccl" if device.type == "cuda" else "gloo")),
            randomness=dict(seed=cfg.seed),
            default_scope="mmengine",  # our models and datasets are built before the Runner sees them
            log_processor=dict(by_epoch=True, window_size=cfg.log_interval),
            visualizer=dict(type="Visualizer", vis_backends=vis_backends, name=experiment),
            cfg=_runner_cfg(cfg, device, work_dir),
            log_level="WARNING",
        )
    _route_logs()
    if run.first_rank:
        print(describe_fp32_precision(fp32), file=sys.stderr)
        if cfg.gpu_decode:
            print(gpu_decode.describe(data.test.dataset, device), file=sys.stderr)
    if note and run.first_rank:
        print(f"note: {note}", file=sys.stderr)
        runner.logger.info(note)
    return runner


def _final_test(data, loader: dict, retrieval: bool) -> dict:
    """When a validation set chooses the checkpoint, the Runner also gets the test split, evaluated
    once after training (``final_test``)."""
    if data.selected_on == "test":
        return {}
    return dict(test_dataloader=dict(loader, dataset=data.test, sampler=dict(type="DefaultSampler", shuffle=False)),
                test_evaluator=dict(type="cncnn_accuracy", retrieval=retrieval), test_cfg=dict())


def _runner_cfg(cfg: Config, device: torch.device, work_dir: Path) -> Config:
    """The keys mmengine's Runner reads from its config (the DDP wrapper) in its own terms.

    SyncBN is converted by cncnn before the Runner sees the model (mmengine's conversion
    would drop our BatchNorm layers' own rules). The trackers get this config as their
    parameters; MLflow's backend uploads the files of its ``work_dir`` when it closes."""
    runner_cfg = cfg.copy()
    runner_cfg.sync_bn = None
    runner_cfg.compile = None  # compiled by cncnn (the forward, with a clear toolchain error), not train_step
    runner_cfg.work_dir = str(work_dir)
    if device.type == "cpu":  # DDP rejects device_ids for a CPU model; mmengine passes LOCAL_RANK
        runner_cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    return runner_cfg
