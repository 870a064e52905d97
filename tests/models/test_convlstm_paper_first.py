"""The ConvLSTM's fast step gives its plain step's numbers; ``impl='plain'`` is a fusion option."""
from __future__ import annotations

import copy

import pytest
import torch

from cncnn_cli.models import build_model
from cncnn_cli.registry import FUSIONS, build_from
from cncnn_plugins.fusions import ConvLSTM, ConvLSTMFusion
from tests.helpers.configs import tiny_model_config

FLOAT64 = dict(rtol=1e-9, atol=1e-11)


def _grads(outputs, inputs):
    """Gradients of a fixed random projection of ``outputs`` (so every output and element counts)."""
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


def _assert_all_close(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, **FLOAT64)


@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_fast_step_equals_plain_step_values_and_gradients(checkpoint, training):
    fast = ConvLSTM(channels=6, checkpoint=checkpoint).double().train(training)
    torch.nn.init.normal_(fast.conv.weight, std=0.2)
    torch.nn.init.normal_(fast.conv.bias, std=0.2)
    plain = copy.deepcopy(fast)
    plain.impl = "plain"
    # P5, P4, P3: ×4, ×2 and ×1 to the output size.
    sequence = [torch.randn(2, 6, s, s, dtype=torch.float64, requires_grad=True) for s in (3, 6, 12)]
    outputs_fast, outputs_plain = fast(sequence, (12, 12)), plain(sequence, (12, 12))
    _assert_all_close(outputs_fast, outputs_plain)
    grads_fast = _grads(outputs_fast, [*fast.parameters(), *sequence])
    grads_plain = _grads(outputs_plain, [*plain.parameters(), *sequence])
    _assert_all_close(grads_fast, grads_plain)


def test_fast_step_trains_after_a_first_call_under_inference_mode():
    cell = ConvLSTM(channels=4).double()
    sequence = [torch.randn(1, 4, s, s, dtype=torch.float64, requires_grad=True) for s in (2, 4, 8)]
    with torch.inference_mode():  # the phase matrices are cached here first
        cell(sequence, (8, 8))
    sum(h.sum() for h in cell(sequence, (8, 8))).backward()
    assert cell.conv.weight.grad.abs().sum() > 0


def test_impl_plain_is_a_fusion_option():
    fusion = build_from(FUSIONS, dict(type="convlstm", channels=8, impl="plain"), "fusion", in_channels=(16, 24, 40))
    assert isinstance(fusion, ConvLSTMFusion) and fusion.impl_on(torch.device("cpu")) == "plain"


@pytest.mark.parametrize("impl", ["auto", "phase", "conv"])
def test_plain_convlstm_model_gives_the_default_logits(impl):
    fast = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, impl=impl))).double().eval()
    plain = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, impl="plain"))).double()
    plain.load_state_dict(fast.state_dict())  # strict: the same keys
    plain.eval()
    assert fast.fusion.impl_on(torch.device("cpu")) != "plain" and plain.fusion.impl_on(torch.device("cpu")) == "plain"
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        out_fast, out_plain = fast(images, mode="tensor"), plain(images, mode="tensor")
    torch.testing.assert_close(out_plain["logits"], out_fast["logits"], **FLOAT64)
    torch.testing.assert_close(out_plain["heads"], out_fast["heads"], **FLOAT64)
