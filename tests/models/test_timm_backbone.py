"""timm trunks as backbones: stage choice by stride, weights from files and caches, offline errors, the CLI."""
from __future__ import annotations

import json
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
import huggingface_hub  # noqa: E402  (installed with timm)
from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from cncnn_cli.cli.main import main  # noqa: E402
from cncnn_cli.config.resolve import resolve_config  # noqa: E402
from cncnn_cli.errors import CncnnError  # noqa: E402
from cncnn_cli.models.classifier import build_model  # noqa: E402
from cncnn_cli.models.variants import VARIANTS, variant_model  # noqa: E402
from cncnn_cli.registry import BACKBONES  # noqa: E402
from cncnn_cli.weights.checkpoint import load_model, read_checkpoint  # noqa: E402
from tests.helpers import datasets as fixtures  # noqa: E402
from tests.helpers.configs import DEMO, tiny_model_config  # noqa: E402
from tests.helpers.numerics import assert_as_exact_as  # noqa: E402

#: A Swin shrunk to test size; its stages come out NHWC from timm.
TINY_SWIN = dict(img_size=64, window_size=2, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
#: `cncnn train demo` flags for a tiny run on a timm trunk.
TIMM_TINY = ["--backbone", "timm:convnext_atto", "--image-size", "32", "--workers", "0", "--epochs", "1",
             "--cfg-options", "model.fusion.channels=16", "--cfg-options", "model.head.hidden=16", *DEMO]


def _backbone(model: str, **options) -> torch.nn.Module:
    return BACKBONES.get("timm")(model=model, **options)


def _full_state(model: str) -> dict[str, torch.Tensor]:
    """The state dict of timm's whole model (classifier included), as a weights file holds it."""
    return {k: v.contiguous() for k, v in timm.create_model(model).state_dict().items()}


@pytest.mark.parametrize("model, options, channels", [
    ("convnext_atto", {}, (80, 160, 320)),
    ("resnet18", {}, (128, 256, 512)),
    ("swin_tiny_patch4_window7_224", {"model_kwargs": TINY_SWIN}, (32, 64, 128)),
])
def test_stages_at_strides_8_16_32_come_out_nchw_with_their_channels(model, options, channels):
    backbone = _backbone(model, **options)
    maps = backbone(torch.randn(2, 3, 64, 64))
    assert backbone.out_channels == channels and backbone.strides == (8, 16, 32)
    assert [tuple(m.shape) for m in maps] == [(2, c, 64 // s, 64 // s) for c, s in zip(channels, (8, 16, 32))]
    assert backbone.nhwc == model.startswith("swin")


def test_a_trunk_without_stride_8_16_32_stages_is_refused_by_name():
    with pytest.raises(CncnnError, match="strides 16, 16, 16.*8, 16 and 32"):
        _backbone("test_vit")


def test_unknown_names_fail_validation_with_the_closest_ones(tmp_path, capsys):
    assert main(["train", "demo", "--work-dir", str(tmp_path / "a"), "--backbone", "timm:convnext_attoo"]) == 2
    err = capsys.readouterr().err
    assert "timm has no model 'convnext_attoo'" in err and "convnext_atto" in err and "Traceback" not in err
    assert main(["train", "demo", "--work-dir", str(tmp_path / "b"), "--backbone", "timm:convnext_atto.bogus"]) == 2
    assert "no weights tag 'bogus'" in capsys.readouterr().err and not (tmp_path / "a").exists()


def test_backbone_flag_keeps_whether_the_recipe_was_pretrained():
    def backbone(recipe: str, **flags) -> dict:
        return resolve_config(recipe, {"pretrained": "recipe", **flags}).model["backbone"]

    assert backbone("demo", backbone="timm:convnext_atto") == {"type": "timm", "model": "convnext_atto",
                                                                "pretrained": None}
    assert backbone("cub", backbone="timm:convnext_atto")["pretrained"] is True
    assert backbone("cub_convnext", backbone="resnet50") == {"type": "resnet50", "pretrained": "IMAGENET1K_V1"}
    assert backbone("cub_convnext", pretrained=None) == {"type": "timm", "model": "convnext_base.fb_in22k",
                                                         "pretrained": None}
    with pytest.raises(CncnnError, match="timm:NAME needs a timm model name"):
        backbone("demo", backbone="timm:")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_load_from_a_local_file(tmp_path, suffix):
    state = _full_state("convnext_atto")
    path = tmp_path / f"atto{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    trunk = _backbone("convnext_atto", pretrained=str(path)).trunk.state_dict()
    assert torch.equal(trunk["stem_0.weight"], state["stem.0.weight"])
    assert torch.equal(trunk["stages_3.blocks.1.conv_dw.weight"], state["stages.3.blocks.1.conv_dw.weight"])


def test_weights_of_another_model_are_refused_by_name(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(_full_state("resnet18"), str(path))
    with pytest.raises(CncnnError, match=re.escape(f"pretrained weights '{path}' do not fit it")):
        _backbone("convnext_atto", pretrained=str(path))


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"stem.0.weight": Path("/")}, protocol=2))  # any non-tensor global
    with pytest.raises(CncnnError, match="refused or unreadable as a weights-only"):
        _backbone("convnext_atto", pretrained=str(path))
    with pytest.raises(CncnnError, match="'missing.pth' is not a file"):
        _backbone("convnext_atto", pretrained="missing.pth")


def _fill_hub_cache(cache: Path, repo: str, state: dict) -> None:
    """The Hugging Face cache layout: refs/main names the snapshot that holds the file."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    save_file(state, str(snapshot / "model.safetensors"))


def test_pretrained_true_reads_the_hugging_face_cache_with_no_network(tmp_path, monkeypatch):
    state = _full_state("convnext_atto")
    _fill_hub_cache(tmp_path, "timm/convnext_atto.d2_in1k", state)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    trunk = _backbone("convnext_atto", pretrained=True).trunk.state_dict()
    assert torch.equal(trunk["stages_2.blocks.0.conv_dw.weight"], state["stages.2.blocks.0.conv_dw.weight"])


@pytest.mark.parametrize("failure", ["offline", "download"])
def test_uncached_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch, capsys, failure):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    if failure == "offline":  # HF_HUB_OFFLINE=1: the hub refuses at once
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    else:  # what the hub raises once its retries against an unreachable host are spent
        def unreachable(*args, **kwargs):
            raise LocalEntryNotFoundError("cannot reach the hub")

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    args = ["train", "demo", "--work-dir", str(tmp_path / "run"), *TIMM_TINY,
            "--cfg-options", "model.backbone.pretrained=true"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors" in err
    assert "--pretrained PATH" in err and str(tmp_path / "hub") in err and "Traceback" not in err


def test_without_timm_the_error_is_an_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    assert main(["train", "demo", "--work-dir", str(tmp_path / "run"), *TIMM_TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "cncnn[timm]"' in err and "Traceback" not in err and len(err.splitlines()) <= 2
    assert main(["plugins"]) == 0  # the plugin itself imports without timm
    assert "timm" in capsys.readouterr().out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_ablation_variant_runs_on_a_timm_trunk(variant):
    config = tiny_model_config(channels=16)
    config["backbone"] = {"type": "timm", "model": "convnext_atto", "pretrained": None}
    model = build_model(variant_model(config, variant)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))["logits"]
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_channels_last_and_bf16_autocast_match_the_plain_forward():
    config = tiny_model_config(channels=16)
    config["backbone"] = {"type": "timm", "model": "swin_tiny_patch4_window7_224", "pretrained": None,
                          "model_kwargs": TINY_SWIN}
    model = build_model(config).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        exact = build_model(config).double().eval()
        exact.load_state_dict(model.state_dict())
        exact = exact(images.double())["logits"]
        plain = model(images)["logits"]
        last = model(images.contiguous(memory_format=torch.channels_last))["logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images)["logits"]
    assert_as_exact_as([last], [plain], [exact], torch.float32)
    # bf16 has no independent reference at its own precision: a sanity bound, relative to the fp64 logits.
    assert mixed.dtype == torch.bfloat16 and (mixed.double() - exact).abs().max() < 0.1 * exact.abs().max()


def test_train_one_epoch_then_the_checkpoint_predicts_and_visualizes_offline(tmp_path, capsys):
    weights = tmp_path / "atto.safetensors"
    save_file(_full_state("convnext_atto"), str(weights))
    run = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(run), *TIMM_TINY, "--pretrained", str(weights)]) == 0
    weights.unlink()  # the checkpoint rebuilds the trunk from its metadata: architecture only
    best = run / "best.safetensors"
    info, state = read_checkpoint(best)
    assert info.model["backbone"] == {"type": "timm", "model": "convnext_atto", "pretrained": None}
    assert any(key.startswith("backbone.trunk.stages_3.") for key in state)
    model, _ = load_model(best)
    assert model.backbone.out_channels == (80, 160, 320)

    photo = fixtures.photo(tmp_path / "bird.png", seed=3)
    capsys.readouterr()
    assert main(["predict", str(photo), "--checkpoint", str(best), "--topk", "3", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    scores = [p["score"] for p in result["predictions"]]
    assert [p["label"] for p in result["predictions"]][0] in info.classes
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert main(["visualize", str(photo), "--checkpoint", str(best), "--out", str(tmp_path / "fig"),
                 "--device", "cpu"]) == 0
    assert (tmp_path / "fig" / "bird_cncnn.png").stat().st_size > 10_000
