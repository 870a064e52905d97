"""Plugin discovery, ImageNet weights offline, packaging of plugins/ and recipes/."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from cncnn_cli.errors import CncnnError
from cncnn_cli.cli.main import main
from cncnn_cli.registry import FUSIONS, load_plugins
from cncnn_plugins.backbones import ResNetBackbone

ROOT = Path(__file__).resolve().parents[2]


def test_plugins_lists_every_registry_with_descriptions(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet50", "wide_resnet50_2", "convlstm", "sum", "spatial_channel", "identity", "CNCNN",
                 "baseline", "cub", "cars", "aircraft", "imagefolder", "demo"):
        assert name in out


def test_a_plugin_file_registers_on_any_command(tmp_path, capsys):
    plugin = tmp_path / "my_fusion.py"
    plugin.write_text(
        "from torch import nn\n"
        "from cncnn_cli.registry import FUSIONS\n"
        "from cncnn_plugins.fusions import Laterals\n"
        "@FUSIONS.register_module(name='laterals_only_test')\n"
        "class LateralsOnly(nn.Module):\n"
        "    '''No navigation: the laterals as they are.'''\n"
        "    def __init__(self, in_channels, channels=256):\n"
        "        super().__init__()\n"
        "        self.out_channels = channels\n"
        "        self.laterals = Laterals(in_channels, channels)\n"
        "    def forward(self, feats):\n"
        "        return self.laterals(feats)\n")
    assert main(["plugins", "--plugin", str(plugin)]) == 0
    assert "laterals_only_test" in capsys.readouterr().out
    assert FUSIONS.get("laterals_only_test") is not None


def test_a_broken_plugin_file_is_one_clear_error(tmp_path, capsys):
    plugin = tmp_path / "broken.py"
    plugin.write_text("import does_not_exist\n")
    assert main(["plugins", "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert "broken.py" in err and "does_not_exist" in err and "Traceback" not in err


def test_entry_point_plugins_are_loaded(monkeypatch):
    import cncnn_cli.registry as registry

    loaded = []

    class FakeEntryPoint:
        name, value = "fake", "fake_pkg.plugins"

        def load(self):
            loaded.append(True)

    monkeypatch.setattr(registry, "_builtins_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint()] if group == "cncnn.plugins" else [])
    load_plugins()
    assert loaded == [True]


def test_pretrained_weights_from_a_file_load_unchanged(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetBackbone("resnet18", pretrained=str(path))
    torch.testing.assert_close(backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_pretrained_weights_from_torchvisions_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import cncnn_cli.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "get_dir", lambda: str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    url = pretrained.weights_url("resnet18", "IMAGENET1K_V1")
    cached = tmp_path / "checkpoints" / url.rpartition("/")[2]
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    backbone = ResNetBackbone("resnet18", pretrained="IMAGENET1K_V1")
    torch.testing.assert_close(backbone.conv1.weight, reference.conv1.weight)


def test_missing_weights_offline_say_which_file_to_put_where(tmp_path, monkeypatch):
    import cncnn_cli.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "get_dir", lambda: str(tmp_path))
    with pytest.raises(CncnnError) as info:
        ResNetBackbone("resnet50", pretrained="IMAGENET1K_V1")
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message and str(tmp_path / "checkpoints") in message
    assert "--no-pretrained" in message and "--pretrained PATH" in message


def test_unknown_weight_names_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CncnnError, match="IMAGENET1K_V1"):
        ResNetBackbone("resnet50", pretrained="IMAGENET_V9")
    bad = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(CncnnError, match="do not fit"):
        ResNetBackbone("resnet18", pretrained=str(bad))


def test_recipes_resolve_by_name_and_by_path(capsys):
    from cncnn_cli.config.recipes import resolve_recipe

    assert resolve_recipe("aircraft").name == "aircraft.py"
    assert resolve_recipe(str(ROOT / "recipes" / "cub.py")).name == "cub.py"
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("cub", "cars", "aircraft", "demo"))


def test_info_and_help_of_every_command(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out
    for command in (["train"], ["eval"], ["predict"], ["visualize"], ["ablate"], ["convert", "official"],
                    ["benchmark"], ["recipes"], ["plugins"], ["info"], ["data", "check"]):
        assert main([*command, "--help"]) == 0
        assert "Example" in capsys.readouterr().out, command


def test_url_weights_come_from_torch_hubs_cache_and_never_unpickle(tmp_path, monkeypatch):
    """torchvision's and timm's URL weights share one path: a cached file loads offline, weights-only."""
    import cncnn_cli.weights.pretrained as pretrained

    monkeypatch.setattr(pretrained, "get_dir", lambda: str(tmp_path))
    url = "https://example.invalid/weights/tiny-0123abcd.pth"
    cached = tmp_path / "checkpoints" / "tiny-0123abcd.pth"
    cached.parent.mkdir()
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, cached)
    assert list(pretrained.load_url_state(url, "tiny weights")) == ["w"]
    torch.save({"w": torch.ones(2), "code": object()}, cached)  # a pickled object: refused, never run
    with pytest.raises(CncnnError, match="tiny-0123abcd.pth: refused"):
        pretrained.load_url_state(url, "tiny weights")
    cached.unlink()
    with pytest.raises(CncnnError, match=r"tiny weights are not cached .*--no-pretrained"):
        pretrained.load_url_state(url, "tiny weights")
