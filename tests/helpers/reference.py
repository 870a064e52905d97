"""CN-CNN written straight from docs/model.md's equations, on a state dict in the authors' layout.

Deliberately naive: laterals after upsampling, one ConvLSTM convolution over [x, h] at
every step (zero state included), BatchNorm written out by hand (eval mode). Tests
compare cncnn's optimized model against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision


def bn(x: torch.Tensor, sd: dict, prefix: str, eps: float = 1e-5) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = sd[f"{prefix}.running_mean"].view(shape), sd[f"{prefix}.running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + eps) * sd[f"{prefix}.weight"].view(shape) + sd[f"{prefix}.bias"].view(shape)


def backbone(sd: dict, arch: str, images: torch.Tensor):
    net = getattr(torchvision.models, arch)(weights=None).eval()
    net.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")}, strict=False)
    x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
    s3 = net.layer2(net.layer1(x))
    s4 = net.layer3(s3)
    return s3, s4, net.layer4(s4)


def cbr(x, sd, prefix):
    return F.relu(bn(F.conv2d(x, sd[f"{prefix}.conv.weight"]), sd, f"{prefix}.bn"))


def convlstm_plain(sequence, weight, bias):
    """One conv over [x, h] per step, gates i, f, o, g, zero initial state."""
    c_hidden = weight.shape[0] // 4
    b, _, h, w = sequence[0].shape
    hidden = torch.zeros(b, c_hidden, h, w)
    cell = torch.zeros(b, c_hidden, h, w)
    outs = []
    for x in sequence:
        gates = F.conv2d(torch.cat([x, hidden], 1), weight, bias, padding=1)
        i, f, o, g = torch.split(gates, c_hidden, 1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        outs.append(hidden)
    return outs


def head(x, sd, prefix, idx):
    bn_in, fc1, bn_hidden, fc2 = idx
    x = bn(x, sd, f"{prefix}.{bn_in}")
    x = F.linear(x, sd[f"{prefix}.{fc1}.weight"], sd[f"{prefix}.{fc1}.bias"])
    x = F.elu(bn(x, sd, f"{prefix}.{bn_hidden}"))
    return F.linear(x, sd[f"{prefix}.{fc2}.weight"], sd[f"{prefix}.{fc2}.bias"])


def gap(x):
    return x.mean((2, 3))


@torch.no_grad()
def cncnn_logits(sd: dict, arch: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-classifier logits and their mean ('ensemble') for normalized float images."""
    s3, s4, s5 = backbone(sd, arch, images)
    size = s3.shape[-2:]
    up5 = F.interpolate(s5, size=size, mode="nearest")
    up4 = F.interpolate(s4, size=size, mode="nearest")
    p5 = cbr(up5, sd, "fpn.F5_1.conv_master") + cbr(up5.mean((2, 3), keepdim=True), sd, "fpn.F5_1.conv_gpb")
    p4 = F.conv2d(up4, sd["fpn.F4_1.weight"], sd["fpn.F4_1.bias"])
    p3 = F.conv2d(s3, sd["fpn.F3_1.weight"], sd["fpn.F3_1.bias"])
    f5, f4, f3 = convlstm_plain([p5, p4, p3], sd["fpn.convlstm.cell_list.0.conv.weight"],
                                sd["fpn.convlstm.cell_list.0.conv.bias"])
    attended = {}
    ca_prev = None
    for level, f in ((3, f3), (4, f4), (5, f5)):
        sa = torch.sigmoid(F.conv_transpose2d(f, sd[f"apn.A{level}_1.conv.weight"], sd[f"apn.A{level}_1.conv.bias"],
                                              padding=1))
        squeezed = F.relu(F.conv2d(f.mean((2, 3), keepdim=True), sd[f"apn.A{level}_2.conv1.weight"],
                                   sd[f"apn.A{level}_2.conv1.bias"]))
        ca = torch.sigmoid(F.conv2d(squeezed, sd[f"apn.A{level}_2.conv2.weight"], sd[f"apn.A{level}_2.conv2.bias"]))
        ca = ca if ca_prev is None else (ca + ca_prev) / 2
        ca_prev = ca
        attended[level] = sa * f + ca * f
    out = {f"cls{level}": head(gap(attended[level]), sd, f"cls{level}", (2, 3, 4, 6)) for level in (3, 4, 5)}
    out["concat"] = head(torch.cat([gap(f3), gap(f4), gap(f5)], 1), sd, "cls_concate", (1, 2, 3, 5))
    out["ensemble"] = torch.stack([out["cls3"], out["cls4"], out["cls5"], out["concat"]]).mean(0)
    return out


def random_official_state(arch: str = "resnet18", channels: int = 32, hidden: int = 16, num_classes: int = 5,
                          reduction: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with exactly docs/model.md's key list and shapes (BN stats randomized too)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    def bn_entries(prefix, n):
        return {f"{prefix}.weight": 1 + rnd(n), f"{prefix}.bias": rnd(n), f"{prefix}.running_mean": rnd(n),
                f"{prefix}.running_var": 0.5 + torch.rand(n, generator=g), f"{prefix}.num_batches_tracked": torch.tensor(7)}

    net = getattr(torchvision.models, arch)(weights=None)
    sd = {}
    for key, value in net.state_dict().items():
        if key.startswith("fc."):
            continue
        if key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith("num_batches_tracked"):
            sd[key] = value.clone()
        elif value.dim() == 4:
            sd[key] = torch.randn(value.shape, generator=g) * (2.0 / (value[0].numel())) ** 0.5
        else:
            sd[key] = (1.0 if key.endswith("weight") else 0.0) + rnd(*value.shape)
    c3, c4, c5 = (net.layer2[-1].conv1.in_channels, net.layer3[-1].conv1.in_channels, net.layer4[-1].conv1.in_channels)
    c = channels
    sd["fpn.F5_1.conv_master.conv.weight"] = rnd(c, c5, 1, 1)
    sd.update(bn_entries("fpn.F5_1.conv_master.bn", c))
    sd["fpn.F5_1.conv_gpb.conv.weight"] = rnd(c, c5, 1, 1)
    sd.update(bn_entries("fpn.F5_1.conv_gpb.bn", c))
    sd["fpn.F4_1.weight"], sd["fpn.F4_1.bias"] = rnd(c, c4, 1, 1), rnd(c)
    sd["fpn.F3_1.weight"], sd["fpn.F3_1.bias"] = rnd(c, c3, 1, 1), rnd(c)
    sd["fpn.convlstm.cell_list.0.conv.weight"] = rnd(4 * c, 2 * c, 3, 3, scale=0.05)
    sd["fpn.convlstm.cell_list.0.conv.bias"] = rnd(4 * c)
    for level in (3, 4, 5):
        sd[f"apn.A{level}_1.conv.weight"], sd[f"apn.A{level}_1.conv.bias"] = rnd(c, 1, 3, 3), rnd(1)
        sd[f"apn.A{level}_2.conv1.weight"], sd[f"apn.A{level}_2.conv1.bias"] = rnd(c // reduction, c, 1, 1), rnd(c // reduction)
        sd[f"apn.A{level}_2.conv2.weight"], sd[f"apn.A{level}_2.conv2.bias"] = rnd(c, c // reduction, 1, 1), rnd(c)
        sd.update(bn_entries(f"cls{level}.2", c))
        sd[f"cls{level}.3.weight"], sd[f"cls{level}.3.bias"] = rnd(hidden, c), rnd(hidden)
        sd.update(bn_entries(f"cls{level}.4", hidden))
        sd[f"cls{level}.6.weight"], sd[f"cls{level}.6.bias"] = rnd(num_classes, hidden), rnd(num_classes)
    sd.update(bn_entries("cls_concate.1", 3 * c))
    sd["cls_concate.2.weight"], sd["cls_concate.2.bias"] = rnd(hidden, 3 * c), rnd(hidden)
    sd.update(bn_entries("cls_concate.3", hidden))
    sd["cls_concate.5.weight"], sd["cls_concate.5.bias"] = rnd(num_classes, hidden), rnd(num_classes)
    return sd
