"""Every ConvLSTM speed-up gives the plain formula's values and gradients; the authors' formulation agrees.

Plain references: ``tests.reference.convlstm_plain`` (one conv over [x, h] per step from a
zero state) on nearest-upsampled maps, and the ``convlstm_official`` fusion plugin.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cncnn_cli.models.classifier import build_model
from cncnn_cli.models.ops import lstm_gates, phase_plan, scatter_phases, upsampled_conv
from cncnn_cli.config.resolve import validate_model
from cncnn_cli.errors import CncnnError
from cncnn_plugins.fusions import ConvLSTM, ConvLSTMFusion, resolve_impl
from cncnn_plugins.official_formulation import OfficialConvLSTMFusion
from tests.helpers.configs import tiny_model_config
from tests.helpers.numerics import assert_as_exact_as
from tests.helpers.reference import convlstm_plain

pytestmark = pytest.mark.numerics

# fp64 only: in fp32 and bf16 two kernels' rounding differs by CPU, so those tests bound a fast path's
# error against fp64 by the plain formula's own (tests.helpers.numerics), never by a fixed figure.
FLOAT64 = dict(rtol=1e-9, atol=1e-11)


def _grads(outputs, inputs):
    """Gradients of a fixed random projection of ``outputs`` (so every output and element counts).

    The projection is in fp64 whatever the outputs' dtype: the same weights for fp32 and fp64 runs.
    """
    gen = torch.Generator().manual_seed(1)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs)


def _assert_all_close(actual, expected, **tolerance):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.parametrize("kernel_size,scale", [(3, 2), (3, 4), (3, 3), (3, 1), (5, 2), (1, 4)])
def test_phase_plan_reads_the_source_pixels_the_upsampled_convolution_reads(kernel_size, scale):
    plan, source, radius = phase_plan(kernel_size, scale), 5, kernel_size // 2
    for out in range(source * scale):
        a, i = out % scale, out // scale
        # Tap t of the convolution over the upsampled axis reads upsampled pixel out + t - radius.
        direct = [(out + t - radius) // scale if 0 <= out + t - radius < source * scale else None
                  for t in range(kernel_size)]
        matrix, via_plan = plan.matrices[plan.phase[a]], []
        for t in range(kernel_size):
            (row,) = [row for row in range(plan.width) if matrix[row][t]]
            src = i + plan.offset[a] + row - plan.pad[0]
            via_plan.append(src if 0 <= src < source else None)
        assert via_plan == direct
    if kernel_size == 3:  # first, middle (all alike) and last phases
        assert len(plan.matrices) == min(scale, 3)


@pytest.mark.parametrize("scale", [(2, 2), (4, 4), (3, 2), (1, 4)])
@pytest.mark.parametrize("with_base", [False, True])
def test_upsampled_conv_equals_conv_of_the_upsampled_map(scale, with_base):
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    base = torch.randn(2, 7, 4 * scale[0], 3 * scale[1], dtype=torch.float64, requires_grad=True)
    phases = upsampled_conv(x, weight, bias, scale)
    fast = scatter_phases(phases, scale, (4, 3), 3, base=base.clone() if with_base else None)
    up = F.interpolate(x, scale_factor=scale, mode="nearest")
    plain = F.conv2d(up, weight, bias, padding=1) + (base if with_base else 0)
    torch.testing.assert_close(fast, plain, **FLOAT64)
    inputs = [x, weight, bias, base] if with_base else [x, weight, bias]
    _assert_all_close(_grads([fast], inputs), _grads([plain], inputs), **FLOAT64)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("use", ["h", "c", "both"])
def test_fused_gate_math_equals_the_formula(with_state, use):
    channels = 4
    gates = torch.randn(2, 4 * channels, 3, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, channels, 3, 5, dtype=torch.float64, requires_grad=True) if with_state else None
    i, f, o, g = gates.split(channels, 1)
    c_plain = torch.sigmoid(i) * torch.tanh(g) + (torch.sigmoid(f) * c if with_state else 0)
    h_plain = torch.sigmoid(o) * torch.tanh(c_plain)
    # The zero state takes only the i, o, g blocks: its forget gate multiplies c = 0.
    fused_input = gates if with_state else torch.cat([i, o, g], 1)
    h, c_next = lstm_gates(fused_input, c)
    torch.testing.assert_close(h, h_plain, **FLOAT64)
    torch.testing.assert_close(c_next, c_plain, **FLOAT64)
    inputs = [gates, c] if with_state else [gates]
    chosen = {"h": [0], "c": [1], "both": [0, 1]}[use]
    fast, plain = [h, c_next], [h_plain, c_plain]
    _assert_all_close(_grads([fast[k] for k in chosen], inputs), _grads([plain[k] for k in chosen], inputs),
                      **FLOAT64)


@pytest.mark.parametrize("impl", [None, "phase", "conv"])  # None: the default, auto (phase on CPU)
@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("size,shapes", [
    ((12, 12), [(3, 3), (6, 6), (12, 12)]),  # the model's P5, P4, P3 (×4, ×2, ×1)
    ((12, 8), [(4, 2), (6, 8), (12, 8)]),    # different factors per axis
    ((10, 10), [(3, 3), (5, 5), (10, 10)]),  # 10/3 is no integer: upsampled first
    ((6, 6), [(6, 6), (6, 6), (6, 6)]),      # all at full size
])
def test_every_impl_equals_the_plain_formula_values_and_gradients(impl, checkpoint, size, shapes):
    cell = ConvLSTM(channels=6, checkpoint=checkpoint, **({} if impl is None else {"impl": impl})).double()
    torch.nn.init.normal_(cell.conv.weight, std=0.2)
    torch.nn.init.normal_(cell.conv.bias, std=0.2)
    assert cell.impl_on(torch.device("cpu")) == (impl or "phase")
    sequence = [torch.randn(2, 6, *shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
    fast = cell(sequence, size)
    plain = convlstm_plain([F.interpolate(x, size=size, mode="nearest") for x in sequence],
                           cell.conv.weight, cell.conv.bias)
    _assert_all_close(fast, plain, **FLOAT64)
    inputs = [cell.conv.weight, cell.conv.bias, *sequence]
    _assert_all_close(_grads(fast, inputs), _grads(plain, inputs), **FLOAT64)


@pytest.mark.parametrize("impl", ["phase", "conv"])
def test_every_impl_keeps_channels_last_and_is_as_exact_as_the_formula_in_fp32_and_bf16(impl):
    cell = ConvLSTM(channels=8, impl=impl)
    formula = ConvLSTM(channels=8, impl="plain")
    formula.load_state_dict(cell.state_dict())
    sequence = [torch.randn(2, 8, s, s) for s in (2, 4, 8)]
    exact = copy.deepcopy(formula).double()([x.double() for x in sequence], (8, 8))
    channels_last = cell([x.contiguous(memory_format=torch.channels_last) for x in sequence], (8, 8))
    assert_as_exact_as(channels_last, formula(sequence, (8, 8)), exact, torch.float32, "fp32")
    assert all(h.is_contiguous(memory_format=torch.channels_last) for h in channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, low_formula = cell(sequence, (8, 8)), formula(sequence, (8, 8))
    assert all(h.dtype == torch.bfloat16 for h in low)
    assert_as_exact_as(low, low_formula, exact, torch.bfloat16, "bf16")


def test_auto_impl_is_phase_on_cpu_and_conv_on_cuda_and_under_compile():
    assert resolve_impl("auto", torch.device("cpu")) == "phase"
    assert resolve_impl("auto", torch.device("cuda", 0)) == "conv"
    assert resolve_impl("auto", torch.device("cpu"), compiling=True) == "conv"
    assert resolve_impl("phase", torch.device("cuda")) == "phase"
    assert ConvLSTM(channels=4, impl="plain").impl_on(torch.device("cuda")) == "plain"


def test_impl_is_checked_and_fast_is_not_an_option():
    with pytest.raises(CncnnError, match="impl 'gemm': expected one of plain, phase, conv, auto"):
        ConvLSTM(channels=4, impl="gemm")
    with pytest.raises(CncnnError, match=r"model.fusion.impl: 'gemm' is not one of"):
        validate_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, impl="gemm")))
    with pytest.raises(CncnnError, match=r"model.fusion.fast: not an option of .*Valid: .*\bimpl\b"):
        validate_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, fast=False)))
    default = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32)))
    plain = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, impl="plain")))
    plain.load_state_dict(default.state_dict())  # strict: impl changes no parameter
    assert default.fusion.convlstm.impl == "auto" and default.fusion.impl_on(torch.device("cpu")) == "phase"


def test_convlstm_keeps_channels_last_inputs_channels_last_and_exact():
    cell = ConvLSTM(channels=8)
    sequence = [torch.randn(2, 8, s, s) for s in (2, 4, 8)]
    exact = copy.deepcopy(cell).double()([x.double() for x in sequence], (8, 8))
    contiguous = cell(sequence, (8, 8))
    channels_last = cell([x.contiguous(memory_format=torch.channels_last) for x in sequence], (8, 8))
    assert_as_exact_as(channels_last, contiguous, exact, torch.float32)  # the GEMM's other orientation
    assert all(h.is_contiguous(memory_format=torch.channels_last) for h in channels_last)


def _fusion_pair(checkpoint_official: bool = False):
    in_channels = (16, 24, 40)
    ours = ConvLSTMFusion(in_channels, channels=8)
    official = OfficialConvLSTMFusion(in_channels, channels=8, checkpoint=checkpoint_official)
    for bn in (m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    assert list(official.state_dict()) == list(ours.state_dict())
    official.load_state_dict(ours.state_dict())
    return ours, official


def _feats():
    return [torch.randn(4, 16, 8, 8, requires_grad=True), torch.randn(4, 24, 4, 4, requires_grad=True),
            torch.randn(4, 40, 2, 2, requires_grad=True)]


@pytest.mark.parametrize("checkpoint_official", [False, True])
def test_official_formulation_equals_convlstm_outputs_gradients_and_bn_statistics(checkpoint_official):
    ours, official = _fusion_pair(checkpoint_official)
    exact_model = copy.deepcopy(official).double()
    feats = _feats()
    exact_feats = [x.detach().double().requires_grad_() for x in feats]

    def run(model, inputs):
        out = model(inputs)
        return [*out, *_grads(out, [*model.parameters(), *inputs]),
                *(b for b in model.buffers() if b.is_floating_point())]

    assert_as_exact_as(run(ours, feats), run(official, feats), run(exact_model, exact_feats), torch.float32)


def test_official_formulation_model_has_the_same_weights_loss_and_gradients():
    ours = build_model(tiny_model_config()).double()
    official = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm_official", channels=32))).double()
    official.load_state_dict(ours.state_dict())  # strict: the same keys
    images, labels = torch.randn(3, 3, 64, 64, dtype=torch.float64), torch.tensor([0, 1, 4])
    loss_ours = sum(ours(images, labels, mode="loss").values())
    loss_official = sum(official(images, labels, mode="loss").values())
    torch.testing.assert_close(loss_ours, loss_official, **FLOAT64)
    loss_ours.backward()
    loss_official.backward()
    _assert_all_close([p.grad for p in ours.parameters()], [p.grad for p in official.parameters()], **FLOAT64)
    _assert_all_close(list(ours.buffers()), list(official.buffers()), **FLOAT64)


def test_checkpointed_convlstm_gives_identical_values_and_gradients():
    plain, _ = _fusion_pair()
    checkpointed = copy.deepcopy(plain)
    checkpointed.convlstm.checkpoint = True
    feats = _feats()
    expected, actual = plain(feats), checkpointed(feats)
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)
    for a, b in zip(_grads(actual, [*checkpointed.parameters(), *feats]),
                    _grads(expected, [*plain.parameters(), *feats])):
        assert torch.equal(a, b)


def test_checkpoint_option_comes_from_the_config():
    model = build_model(dict(tiny_model_config(), fusion=dict(type="convlstm", channels=32, checkpoint=True)))
    assert model.fusion.convlstm.checkpoint
    losses = model(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]), mode="loss")
    sum(losses.values()).backward()
    assert model.fusion.convlstm.conv.weight.grad.abs().sum() > 0


def test_bf16_autocast_matches_the_official_formulation_to_bf16_precision():
    ours, official = _fusion_pair()
    feats = _feats()
    exact = copy.deepcopy(official).double()([x.double() for x in feats])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, plain = ours(feats), official(feats)
    assert all(f.dtype == torch.bfloat16 for f in fast)
    assert_as_exact_as(fast, plain, exact, torch.bfloat16)
