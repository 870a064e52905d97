"""--amp's precision per device: bf16 without a loss scaler where the hardware has it, fp16 with
dynamic loss scaling elsewhere; the CUDA capability queries are patched (CI has no GPU)."""
from __future__ import annotations

import contextlib

import pytest
import torch
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper

from cncnn_cli.engine.amp import Bf16OptimWrapper, amp_wrapper_config, autocast_dtype

CUDA = torch.device("cuda", 0)


@pytest.fixture
def gpu(monkeypatch):
    """A GPU whose native bf16 support the test sets; ``torch.cuda.device`` does nothing."""
    calls = []

    def set_native_bf16(native: bool) -> None:
        def query(including_emulation: bool = True) -> bool:
            calls.append(including_emulation)
            return native or including_emulation  # emulation is always "supported"
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", query)

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    return set_native_bf16, calls


def test_bf16_only_where_the_gpu_computes_it_natively(gpu):
    set_native_bf16, calls = gpu
    set_native_bf16(True)
    assert autocast_dtype(CUDA) == torch.bfloat16
    assert amp_wrapper_config(autocast_dtype(CUDA), CUDA) == {"type": "Bf16OptimWrapper", "device_type": "cuda"}
    set_native_bf16(False)  # e.g. a T4 or V100: bf16 only emulated
    assert autocast_dtype(CUDA) == torch.float16
    assert amp_wrapper_config(autocast_dtype(CUDA), CUDA) == {"type": "AmpOptimWrapper", "dtype": "float16", "loss_scale": "dynamic"}
    assert calls and not any(calls)  # always asked without emulation
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16


def _wrapper(config: dict, accumulate: int):
    model = torch.nn.Linear(4, 2)
    return model, build_optim_wrapper(model, dict(config, optimizer=dict(type="SGD", lr=0.1),
                                                  accumulative_counts=accumulate))


def test_fp16_has_a_dynamic_loss_scaler_and_bf16_none(gpu, monkeypatch):
    set_native_bf16, _ = gpu
    set_native_bf16(False)
    import mmengine.optim.optimizer.amp_optimizer_wrapper as mm_amp

    monkeypatch.setattr(mm_amp, "is_cuda_available", lambda: True)  # the wrapper asserts a GPU
    _, fp16 = _wrapper(amp_wrapper_config(autocast_dtype(CUDA), CUDA), accumulate=2)
    assert isinstance(fp16, AmpOptimWrapper) and fp16.cast_dtype == torch.float16
    assert fp16.loss_scaler is not None and fp16._scale_update_param is None  # dynamic
    set_native_bf16(True)
    _, bf16 = _wrapper(amp_wrapper_config(autocast_dtype(CUDA), CUDA), accumulate=2)
    assert type(bf16) is Bf16OptimWrapper and not hasattr(bf16, "loss_scaler")


def test_bf16_wrapper_autocasts_and_steps_once_per_accumulation_window():
    model, wrapper = _wrapper(amp_wrapper_config(torch.bfloat16, torch.device("cpu")), accumulate=2)
    wrapper.initialize_count_status(model, 0, 4)
    before = model.weight.detach().clone()
    inputs = torch.randn(3, 4)
    with wrapper.optim_context(model):
        output = model(inputs)
    assert output.dtype == torch.bfloat16
    wrapper.update_params(output.float().sum())
    assert torch.equal(model.weight, before)  # first of two micro-batches: no step yet
    with wrapper.optim_context(model):
        wrapper.update_params(model(inputs).float().sum())
    assert not torch.equal(model.weight, before)
