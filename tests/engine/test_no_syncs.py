"""The training step reads nothing back from the device between log intervals (issue 14).

Each read-back (``.item()``, ``float()``, ``.tolist()``, ``.cpu()``) waits for a GPU to finish
its queued work. CI has no GPU, so the tests count read-backs on a tensor subclass that records
them; the same code paths run on CUDA.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub

from cncnn_cli.engine.hooks import ConsoleHook, DeferredRuntimeInfoHook, NonFiniteLoss, StopHook, WorkDirHook
from cncnn_cli.engine.signals import StopRequest

READS = {"__float__", "__int__", "__bool__", "__index__", "item", "tolist", "cpu", "numpy"}


class Counted(torch.Tensor):
    """A tensor that counts the read-backs made on it (and on tensors computed from it)."""

    reads = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READS:
            Counted.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.fixture
def counted():
    Counted.reads = 0

    def make(value: float) -> Counted:
        return torch.tensor(value).as_subclass(Counted)
    return make


def _runner(iterations: int):
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.1}, {"lr": 0.001}])
    return SimpleNamespace(train_dataloader=[None] * iterations, epoch=0, max_epochs=1, iter=0,
                           optim_wrapper=SimpleNamespace(optimizer=optimizer),
                           message_hub=MessageHub(f"test_no_syncs_{id(optimizer)}"))


def _work_dir_hook(tmp_path, interval: int) -> WorkDirHook:
    hook = WorkDirHook(lambda: None, run_info={}, resuming=False, interval=interval)
    hook.work_dir = tmp_path
    return hook


def _loop(hook, runner, losses, reads_after: list[int]) -> None:
    """Call ``after_train_iter`` per loss, noting the read-back count after each iteration."""
    for index, loss in enumerate(losses):
        hook.after_train_iter(runner, index, data_batch={"inputs": torch.zeros(2, 1), "data_samples": torch.zeros(2)}, outputs={"loss": loss})
        reads_after.append(Counted.reads)


def test_work_dir_hook_reads_the_loss_once_per_interval_and_at_the_epoch_end(tmp_path, counted):
    runner, hook, reads = _runner(7), _work_dir_hook(tmp_path, interval=3), []
    hook.before_train_epoch(runner)
    _loop(hook, runner, [counted(float(i)) for i in range(7)], reads)
    assert reads == [0, 0, 1, 1, 1, 2, 3]  # iterations 3, 6 and the last
    assert hook._epoch_loss_value(runner) == sum(range(7))


def test_a_non_finite_loss_is_caught_at_the_next_read_back_and_named(tmp_path, counted):
    runner, hook = _runner(6), _work_dir_hook(tmp_path, interval=3)
    hook.before_train_epoch(runner)
    losses = [counted(1.0)] * 3 + [counted(math.nan)] + [counted(1.0)] * 2
    with pytest.raises(NonFiniteLoss, match="epoch 1, within iterations 4–6"):
        _loop(hook, runner, losses, [])


def test_console_hook_reads_the_loss_once_per_interval(counted, monkeypatch):
    runner, hook, reads = _runner(5), ConsoleHook(interval=2), []
    monkeypatch.setattr(hook.console, "print", lambda *args, **kwargs: None)
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    _loop(hook, runner, [counted(2.0)] * 5, reads)
    assert reads == [0, 1, 1, 2, 3] and hook._loss == 2.0


def test_runtime_info_reaches_the_message_hub_at_intervals_in_one_copy_with_every_value(counted):
    runner, hook = _runner(5), DeferredRuntimeInfoHook(interval=2)
    outputs = [{"loss": counted(float(i)), "loss_cls3": counted(i / 2)} for i in range(5)]
    reads = []
    for index, output in enumerate(outputs):
        hook.after_train_iter(runner, index, outputs=output)
        reads.append(Counted.reads)
    assert reads == [0, 1, 1, 2, 3]  # one copy per flush, whatever the number of values
    loss = runner.message_hub.get_scalar("train/loss")
    assert list(loss.data[0]) == [0.0, 1.0, 2.0, 3.0, 4.0]  # every iteration, in order, as mmengine logs it
    assert list(runner.message_hub.get_scalar("train/loss_cls3").data[0]) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_ddp_ranks_agree_to_stop_only_every_interval_steps(tmp_path, monkeypatch):
    import cncnn_cli.engine.hooks as hooks

    reduces = []
    monkeypatch.setattr(hooks, "is_distributed", lambda: True)
    monkeypatch.setattr(hooks, "_dist_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(hooks.dist, "all_reduce", lambda tensor, op=None: reduces.append(tensor))
    hook = StopHook(StopRequest(), _work_dir_hook(tmp_path, interval=4), batch_size=2, interval=4)
    hook.stop.signum = 15
    agreed = [hook._stop_agreed(step) for step in range(1, 9)]
    assert agreed == [False, False, False, True] * 2 and len(reduces) == 2


@pytest.mark.parametrize("other_rank", [False, True])
def test_ddp_ranks_stop_together_when_any_rank_loss_is_not_finite(other_rank, tmp_path, counted, monkeypatch):
    """A rank that stopped alone would leave the others waiting in their next gradient all-reduce."""
    import cncnn_cli.engine.hooks as hooks

    def all_reduce(tensor, op=None):  # another rank's NaN, as the MAX over ranks brings it here
        tensor.fill_(max(float(tensor), float(other_rank)))

    monkeypatch.setattr(hooks, "is_distributed", lambda: True)
    monkeypatch.setattr(hooks, "_dist_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(hooks.dist, "all_reduce", all_reduce)
    runner, hook = _runner(6), _work_dir_hook(tmp_path, interval=3)
    hook.before_train_epoch(runner)
    losses = [counted(1.0)] * 3  # this rank's own loss stays finite
    if not other_rank:
        _loop(hook, runner, losses, [])
        assert hook._epoch_loss_value(runner) == 3.0
        return
    with pytest.raises(NonFiniteLoss, match="became non-finite on another process at epoch 1, within iterations 1–3"):
        _loop(hook, runner, losses, [])  # stops at the read-back after iteration 3, with the other rank


def _predictions(batch: int, classes: int = 7) -> list[dict]:
    """Predict-mode outputs as the model gives them: one dict per image, views into batch tensors."""
    ensemble = torch.randn(batch, classes, dtype=torch.bfloat16)
    heads = {name: torch.randn(batch, classes) for name in ("cls3", "cls4", "cls5", "concat")}
    return [{"logits": ensemble[i], "heads": {k: v[i] for k, v in heads.items()}, "label": i % classes}
            for i in range(batch)]


def test_the_metric_copies_each_batch_to_the_host_once_and_keeps_the_same_results():
    from cncnn_cli.evaluation.metrics import AccuracyMetric

    batches = [_predictions(5), _predictions(3)]
    metric = AccuracyMetric()
    for batch in batches:
        Counted.reads = 0
        metric.process(None, [{"logits": s["logits"].as_subclass(Counted), "label": s["label"],
                               "heads": {k: v.as_subclass(Counted) for k, v in s["heads"].items()}} for s in batch])
        assert Counted.reads == 1  # one .cpu() for the batch (the labels are Python ints already)
    expected = [{"logits": s["logits"].float().cpu(), "heads": {k: v.float().cpu() for k, v in s["heads"].items()},
                 "label": s["label"]} for batch in batches for s in batch]  # the former per-tensor copies
    assert len(metric.results) == len(expected)
    for got, want in zip(metric.results, expected):
        assert torch.equal(got["logits"], want["logits"]) and got["label"] == want["label"]
        assert got["heads"].keys() == want["heads"].keys()
        assert all(torch.equal(got["heads"][k], want["heads"][k]) for k in want["heads"])
        assert got["logits"].untyped_storage().nbytes() == 7 * 4  # its own row: gathers pickle no whole batch
    assert metric.compute_metrics(metric.results) == AccuracyMetric().compute_metrics(expected)


def test_loaders_keep_their_workers_and_prefetch_and_pin_on_cuda():
    from mmengine.runner import Runner

    from cncnn_cli.engine.loader import PREFETCH_FACTOR, loader_config, worker_init

    cuda = loader_config(8, 2, torch.device("cuda"), seed=0, rank=0)
    assert cuda["persistent_workers"] is True and cuda["prefetch_factor"] == PREFETCH_FACTOR and cuda["pin_memory"]
    cpu = loader_config(8, 0, torch.device("cpu"), seed=0, rank=0)
    assert cpu["persistent_workers"] is False and "prefetch_factor" not in cpu and not cpu["pin_memory"]
    import cncnn_cli.data.collate  # noqa: F401  (registers cncnn_collate)

    dataset = [{"inputs": torch.zeros(3, 4, 4, dtype=torch.uint8), "data_samples": 0}] * 4
    for workers in (0, 2):  # what mmengine builds from them
        loader = Runner.build_dataloader(dict(loader_config(2, workers, torch.device("cpu"), seed=0, rank=0),
                                              dataset=dataset, sampler=dict(type="DefaultSampler", shuffle=False)),
                                         seed=0)
        assert loader.persistent_workers is (workers > 0)
        assert (loader.worker_init_fn.func is worker_init) is (workers > 0)  # workers leave stop signals to us
        assert loader.prefetch_factor == (PREFETCH_FACTOR if workers else None)


def test_the_preprocessor_copies_batches_to_the_device_without_blocking(monkeypatch):
    from cncnn_cli.models.classifier import CncnnDataPreprocessor

    calls = []
    original = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        calls.append(kwargs.get("non_blocking"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    out = CncnnDataPreprocessor()({"inputs": torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                                   "data_samples": torch.tensor([0, 1])})
    assert calls and all(calls)  # images and labels
    assert out["inputs"].dtype == torch.float32


def test_the_stop_hook_runs_after_the_records_it_saves_and_before_the_trackers():
    """A mid-epoch stop saves through WorkDirHook, which must have counted that iteration's loss first
    (a NaN in it is then caught, never saved); the trackers read the records last."""
    from mmengine.runner.priority import get_priority

    from cncnn_cli.engine.hooks import StopHook
    from cncnn_cli.engine.trackers import TrackerHook

    order = [get_priority(hook.priority) for hook in (WorkDirHook, StopHook, TrackerHook)]
    assert order == sorted(order) and len(set(order)) == 3
