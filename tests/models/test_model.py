"""The model follows docs/model.md, and every exact speed-up gives the plain formula's numbers."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cncnn_cli.models.classifier import build_model
from cncnn_plugins.backbones import ResNetBackbone
from cncnn_plugins.fusions import ConvLSTM, Laterals
from tests.helpers.configs import tiny_model_config
from tests.helpers.numerics import assert_as_exact_as
from tests.helpers.reference import convlstm_plain


def test_split_convlstm_equals_one_conv_over_x_and_h():
    cell = ConvLSTM(channels=8)
    torch.nn.init.normal_(cell.conv.weight, std=0.2)
    torch.nn.init.normal_(cell.conv.bias, std=0.2)
    sequence = [torch.randn(3, 8, 6, 5) for _ in range(3)]
    fast = cell(sequence)
    plain = convlstm_plain(sequence, cell.conv.weight, cell.conv.bias)
    exact = convlstm_plain([x.double() for x in sequence], cell.conv.weight.double(), cell.conv.bias.double())
    assert_as_exact_as(fast, plain, exact, torch.float32)


def test_split_convlstm_gradients_equal_plain_gradients():
    cell = ConvLSTM(channels=4)
    sequence = [torch.randn(2, 4, 5, 5, requires_grad=True) for _ in range(3)]
    weight, bias = cell.conv.weight, cell.conv.bias
    exact_leaves = [t.detach().double().requires_grad_() for t in (weight, bias, *sequence)]

    def grads(outputs, leaves):
        return torch.autograd.grad(sum(h.square().sum() for h in outputs), leaves)

    assert_as_exact_as(grads(cell(sequence), [weight, *sequence]),
                       grads(convlstm_plain(sequence, weight, bias), [weight, *sequence]),
                       grads(convlstm_plain(exact_leaves[2:], *exact_leaves[:2]), [exact_leaves[0], *exact_leaves[2:]]),
                       torch.float32)


@pytest.mark.parametrize("train", [True, False])
def test_laterals_before_upsampling_equal_upsampling_first(train):
    laterals = Laterals((16, 24, 40), channels=8)
    for bn in (m for m in laterals.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    reference = copy.deepcopy(laterals)
    laterals.train(train)
    reference.train(train)
    s3, s4, s5 = torch.randn(4, 16, 12, 12), torch.randn(4, 24, 6, 6), torch.randn(4, 40, 3, 3)
    exact = copy.deepcopy(reference).double()
    p3, p4, p5 = laterals((s3, s4, s5))
    up5 = F.interpolate(s5, size=(12, 12), mode="nearest")
    up4 = F.interpolate(s4, size=(12, 12), mode="nearest")
    expected = [reference.fpa5(up5), reference.lateral4(up4), reference.lateral3(s3)]
    exact_out = [exact.fpa5(up5.double()), exact.lateral4(up4.double()), exact.lateral3(s3.double())]
    # Batch statistics were the same: the running estimates moved alike.
    floats = [b for b in laterals.buffers() if b.is_floating_point()]
    assert_as_exact_as([p5, p4, p3, *floats], [*expected, *(b for b in reference.buffers() if b.is_floating_point())],
                       [*exact_out, *(b for b in exact.buffers() if b.is_floating_point())], torch.float32)


@pytest.mark.parametrize("fusion,attention", [("convlstm", "spatial_channel"), ("sum", "spatial_channel"),
                                              ("sum", "identity")])
def test_eval_logits_do_not_depend_on_the_rest_of_the_batch(fusion, attention):
    model = build_model(tiny_model_config(fusion=fusion, attention=attention)).eval()
    images = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        batch = model(images, mode="tensor")["logits"]
        alone = model(images[2:3], mode="tensor")["logits"]
        shuffled = model(images[[4, 2, 0]], mode="tensor")["logits"]
    torch.testing.assert_close(alone[0], batch[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shuffled[1], batch[2], rtol=1e-4, atol=1e-5)


def test_resnet50_at_448_gives_the_paper_feature_shapes_and_full_model_runs():
    backbone = ResNetBackbone("resnet50").eval()
    assert backbone.out_channels == (512, 1024, 2048)
    model = build_model(dict(tiny_model_config(num_classes=200, channels=256, hidden=512),
                             backbone=dict(type="resnet50", pretrained=None))).eval()
    model.backbone = backbone
    with torch.no_grad():
        s3, s4, s5 = backbone(torch.randn(1, 3, 448, 448))
        assert s3.shape == (1, 512, 56, 56) and s4.shape == (1, 1024, 28, 28) and s5.shape == (1, 2048, 14, 14)
        out = model.forward_features(torch.randn(1, 3, 448, 448))
    assert out["logits"].shape == (1, 200)
    assert [a.shape for a in out["attended"]] == [(1, 256, 56, 56)] * 3
    assert [m.shape for m in out["maps"]] == [(1, 1, 56, 56)] * 3


def test_loss_mode_returns_the_four_cross_entropies_and_predict_the_ensemble():
    model = build_model(tiny_model_config())
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    losses = model(images, labels, mode="loss")
    assert sorted(losses) == ["loss_cls3", "loss_cls4", "loss_cls5", "loss_concat"]
    model.eval()
    with torch.no_grad():
        predictions = model(images, labels, mode="predict")
        heads = model(images, mode="tensor")["heads"]
    assert len(predictions) == 4 and predictions[1]["label"] == 1
    mean = torch.stack([heads[k][1] for k in ("cls3", "cls4", "cls5", "concat")]).mean(0)
    torch.testing.assert_close(predictions[1]["logits"], mean)


def test_baseline_model_has_one_classifier():
    model = build_model(dict(type="baseline", num_classes=7, backbone=dict(type="resnet18", pretrained=None)))
    losses = model(torch.randn(2, 3, 64, 64), torch.tensor([1, 2]), mode="loss")
    assert list(losses) == ["loss_fc"]


def test_native_mask_size_keeps_levels_at_their_backbone_resolution():
    cfg = tiny_model_config()
    cfg["attention"]["mask_size"] = "native"
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, 64, 64))
    assert [m.shape[-1] for m in out["maps"]] == [8, 4, 2]


def test_new_convolutions_use_he_normal_and_bn_starts_at_identity():
    model = build_model(dict(tiny_model_config(channels=64), backbone=dict(type="resnet18", pretrained=None)))
    weight = model.fusion.convlstm.conv.weight
    expected_std = (2.0 / (3 * 3 * weight.shape[0])) ** 0.5
    assert abs(weight.std().item() - expected_std) / expected_std < 0.05
    bn = model.fusion.laterals.fpa5.master.bn
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0) and bn.momentum == 0.01


def test_fusion_width_and_head_width_come_from_the_config():
    model = build_model(tiny_model_config(channels=48, hidden=24))
    assert model.fusion.convlstm.conv.weight.shape == (4 * 48, 2 * 48, 3, 3)
    assert model.head.cls3[3].weight.shape == (24, 48)
