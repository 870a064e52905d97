"""``cncnn export``: ONNX and .pt2 files that match cncnn's forward, carry their metadata, and fail cleanly."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cncnn_cli import __version__
from cncnn_cli.apis import export as export_api
from cncnn_cli.apis.inference import Predictor
from cncnn_cli.cli.main import main
from cncnn_cli.weights.checkpoint import load_model, read_checkpoint
from tests.helpers.configs import DEMO, TINY

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SNIPPET_SOURCE = Path(__file__).parents[2] / "docs" / "deployment.md"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, cncnn_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(cncnn_checkpoint), str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory, cncnn_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("pt2") / "model.pt2"
    assert main(["export", str(cncnn_checkpoint), str(out)]) == 0
    return out


def _batches(checkpoint: Path) -> tuple[Predictor, dict[int, torch.Tensor]]:
    """cncnn's predictor and uint8 batches of 1, 3 and 5 images through the checkpoint's eval transform."""
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    samples = [predictor.preprocess(p) for p in export_api.synthetic_images(count=5, seed=7)]
    return predictor, {n: torch.stack(samples[:n]) for n in (1, 3, 5)}


def _max_delta(logits: np.ndarray, predictor: Predictor, batch: torch.Tensor) -> float:
    expected = torch.softmax(predictor.forward(batch)["logits"], 1)
    return float((torch.softmax(torch.as_tensor(logits), 1) - expected).abs().max())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.numerics
def test_onnx_matches_cncnn_at_batch_1_and_3_with_a_dynamic_batch(onnx_file, cncnn_checkpoint):
    predictor, batches = _batches(cncnn_checkpoint)
    # cncnn's own forward runs the ConvLSTM's fast kernels; the file holds the plain formula.
    assert any(getattr(m, "impl", "plain") != "plain" for m in predictor.model.modules() if hasattr(m, "impl"))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [3, 64, 64])
    assert isinstance(inp.shape[0], str) and out.name == "logits"
    for n, batch in batches.items():
        logits = session.run(["logits"], {"images": batch.numpy()})[0]
        assert logits.shape == (n, 5)
        assert _max_delta(logits, predictor, batch) <= 1e-4


def test_onnx_metadata_reads_back(onnx_file, cncnn_checkpoint):
    info, _ = read_checkpoint(cncnn_checkpoint)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(onnx_file)).metadata_props}
    assert props["classes"] == info.classes == [f"bird {i}" for i in range(5)]
    assert props["preprocess"] == {"resize": 72, "crop": 64, "mean": info.preprocess["mean"],
                                   "std": info.preprocess["std"]}
    assert props["cncnn_version"] == __version__
    digest = hashlib.sha256(cncnn_checkpoint.read_bytes()).hexdigest()
    assert props["source_checkpoint"] == {"name": cncnn_checkpoint.name, "sha256": digest}
    assert not list(onnx_file.parent.glob("*.data"))  # the weights are inside the one file


def test_deployment_doc_snippet_runs_with_onnxruntime_alone(onnx_file, cncnn_checkpoint, tmp_path, monkeypatch):
    snippet = re.search(r"```python\n(import json\n.*?)```", SNIPPET_SOURCE.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cub.onnx").symlink_to(onnx_file)
    pixels = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save("bird.jpg")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, str(SNIPPET_SOURCE), "exec"), {})  # noqa: S102 - the docs' own code
    label, score = printed.getvalue().rsplit(maxsplit=1)
    best = Predictor.from_checkpoint(cncnn_checkpoint, device="cpu").predict(["bird.jpg"], topk=1)[0].predictions[0]
    assert label == best["label"] and float(score) == pytest.approx(best["score"], abs=1e-4)


@pytest.mark.numerics
def test_pt2_matches_cncnn_and_writes_its_metadata_beside_it(pt2_file, cncnn_checkpoint):
    predictor, batches = _batches(cncnn_checkpoint)
    module = torch.export.load(pt2_file).module()
    for n, batch in batches.items():
        with torch.no_grad():
            logits = module(batch)
        assert logits.shape == (n, 5) and _max_delta(logits.numpy(), predictor, batch) <= 1e-4
    meta = json.loads(pt2_file.with_name("model.pt2.json").read_text())
    assert meta["classes"] == [f"bird {i}" for i in range(5)] and meta["preprocess"]["crop"] == 64
    assert meta["cncnn_version"] == __version__ and meta["source_checkpoint"]["name"] == cncnn_checkpoint.name


def test_fixed_batch_with_format_flag_and_user_images(cncnn_checkpoint, tmp_path, capsys):
    Image.new("RGB", (50, 70), (200, 30, 90)).save(tmp_path / "red.png")
    out = tmp_path / "model.bin"
    assert main(["export", str(cncnn_checkpoint), str(out), "--format", "pt2", "--batch", "2",
                 "--images", str(tmp_path / "red.png")]) == 0
    captured = capsys.readouterr()
    assert "max |Δp|, batch 2" in captured.out and "batch 3" not in captured.out
    assert "verify: batch 2" in captured.err
    module = torch.export.load(out).module()
    assert module(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape == (2, 5)
    with pytest.raises(AssertionError, match="Guard"):  # the batch was fixed at export
        module(torch.zeros(3, 3, 64, 64, dtype=torch.uint8))
    assert (tmp_path / "model.bin.json").is_file()


def test_a_failed_verification_writes_nothing_and_keeps_the_old_file(cncnn_checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model.pt2"
    out.write_text("previous export")
    monkeypatch.setattr(export_api, "TOLERANCE", -1.0)  # every export now fails verification
    assert main(["export", str(cncnn_checkpoint), str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the exported model differs") and "Traceback" not in "\n".join(err)
    assert out.read_text() == "previous export" and _leftovers(tmp_path) == ["model.pt2"]


def test_export_graph_leaves_the_models_fast_path_alone(cncnn_checkpoint):
    model, _ = load_model(cncnn_checkpoint)
    graph = export_api.ExportGraph(model)
    assert not graph.training
    assert [m.impl for m in model.modules() if hasattr(m, "impl")] == ["auto"]
    assert [m.impl for m in graph.modules() if hasattr(m, "impl")] == ["plain"]


@pytest.mark.parametrize("package", ["onnx", "onnxscript", "onnxruntime"])
def test_a_missing_package_gives_the_install_hint_before_writing(package, cncnn_checkpoint, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    assert main(["export", str(cncnn_checkpoint), str(tmp_path / "model.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and package in err and 'pip install "cncnn[export]"' in err
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("args", [
    ["missing.safetensors", "model.onnx"],
    ["CKPT", "model.txt"],
    ["CKPT", "model.onnx", "--format", "tflite"],
    ["CKPT", "model.onnx", "--batch", "2", "--dynamic-batch"],
    ["CKPT", "model.pt2", "--opset", "17"],
    ["CKPT", "model.onnx", "--images", "EMPTY"],
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, cncnn_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    argv = [{"CKPT": str(cncnn_checkpoint), "EMPTY": "empty"}.get(a, a) for a in args]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert _leftovers(tmp_path) == ["empty"]


@pytest.mark.numerics
def test_full_size_converted_checkpoint_exports_and_verifies(converted_checkpoint, tmp_path, capsys):
    """The 448-pixel official layout, as `cncnn convert official` writes it."""
    out = tmp_path / "converted.onnx"
    assert main(["export", str(converted_checkpoint), str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 448, 448]
    deltas = re.findall(r"batch (\d): max \|Δ probability\| = (\S+)", capsys.readouterr().err)
    assert [n for n, _ in deltas] == ["1", "3"] and all(float(d) <= 1e-4 for _, d in deltas)


@pytest.mark.slow
def test_a_demo_trained_checkpoint_exports(tmp_path):
    work = tmp_path / "demo"
    assert main(["train", "demo", "--work-dir", str(work), *TINY, *DEMO, "--epochs", "1"]) == 0
    assert main(["export", str(work / "best.safetensors"), str(tmp_path / "demo.onnx")]) == 0
    classes = json.loads(ort.InferenceSession(str(tmp_path / "demo.onnx")).get_modelmeta()
                         .custom_metadata_map["classes"])
    assert len(classes) == 10
