"""``predict`` and ``eval`` straight from an exported ``.onnx`` file: onnxruntime, no torch, the same results."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cncnn_cli.cli.main import main
from cncnn_cli.deploy.preprocess import eval_pixels
from tests.helpers import datasets as fixtures

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

#: Largest |Δ| accepted between a score from the .onnx file and the .safetensors checkpoint's
#: (the export itself is verified to 1e-4 in probability; measured here: about 1e-7).
SCORE_TOLERANCE = 1e-5
TORCH_MODULES = ("torch", "torchvision", "mmengine")
PROBE = """
import json, sys
from cncnn_cli.cli.main import main
code = main({argv!r})
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def _images(folder: Path) -> Path:
    """Three noise PNGs, a photo of another size, and a file that is not an image, in ``folder``."""
    fixtures.random_pngs(folder, 3, size=50)
    fixtures.photo(folder / "photo.png", seed=3)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize("resize, crop", [(40, 32), (41, 32), ((30, 90), (25, 64)), (300, 224), (24, 32)])
def test_numpy_preprocessing_equals_the_torchvision_transform_pixel_for_pixel(resize, crop):
    from cncnn_cli.data.transforms import build_transform

    preprocess = {"resize": resize, "crop": crop}
    transform = build_transform(preprocess, train=False)
    rng = np.random.default_rng(0)
    for height, width in [(50, 50), (37, 211), (480, 640), (9, 13), (1000, 300)]:
        gradient = np.linspace(0, 255, width)[None, :, None] + rng.normal(0, 40, (height, width, 3))
        image = Image.fromarray(np.clip(gradient, 0, 255).astype(np.uint8))
        assert np.array_equal(eval_pixels(image, preprocess), transform(image).numpy()), (height, width)


def test_predict_from_onnx_gives_the_checkpoints_json(tmp_path, deploy_checkpoint, deploy_onnx, capsys):
    folder = _images(tmp_path / "images")
    documents = {}
    for checkpoint in (deploy_checkpoint, deploy_onnx):
        capsys.readouterr()
        code = main(["predict", str(folder), str(tmp_path / "missing.jpg"), "--checkpoint", str(checkpoint),
                     "--json", "--topk", "3", "--batch-size", "2"])
        assert code == 2  # the unreadable and the missing file are error entries, as with a checkpoint
        documents[checkpoint.suffix] = json.loads(capsys.readouterr().out)
    torch_run, onnx_run = documents[".safetensors"], documents[".onnx"]
    assert [d["image"] for d in onnx_run] == [d["image"] for d in torch_run] and len(onnx_run) == 6
    for ours, theirs in zip(onnx_run, torch_run):
        assert ours.get("error") == theirs.get("error")
        if "error" in ours:
            continue
        scores = {p["label"]: (p["index"], p["score"]) for p in ours["predictions"]}
        expected = {p["label"]: (p["index"], p["score"]) for p in theirs["predictions"]}
        assert scores.keys() == expected.keys() == {"cat", "dog", "owl"}
        for label, (index, score) in scores.items():
            assert index == expected[label][0] and abs(score - expected[label][1]) <= SCORE_TOLERANCE


def test_predict_from_onnx_imports_neither_torch_nor_mmengine(tmp_path, deploy_onnx):
    image = fixtures.photo(tmp_path / "photo.png", seed=1)
    argv = ["predict", str(image), "--checkpoint", str(deploy_onnx), "--json"]
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=TORCH_MODULES)],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    assert json.loads("\n".join(lines[:-1]))[0]["predictions"]  # it did predict
    assert json.loads(lines[-1]) == {"code": 0, "heavy": []}


def test_eval_of_onnx_reports_the_checkpoints_accuracy(deploy_checkpoint, deploy_onnx, capsys):
    reports = {}
    for checkpoint in (deploy_checkpoint, deploy_onnx):
        capsys.readouterr()
        assert main(["eval", str(checkpoint), "--json", "--workers", "0", "--tta", "flip"]) == 0
        reports[checkpoint.suffix] = json.loads(capsys.readouterr().out)  # the dataset named in the metadata
    ours, theirs = reports[".onnx"], reports[".safetensors"]
    for key in ("top1", "top5", "mean_class_accuracy", "num_images"):
        assert ours[key] == theirs[key] and ours["without_tta"][key] == theirs["without_tta"][key]
    assert ours["num_images"] == 9 and ours["heads"] == {"ensemble": theirs["heads"]["ensemble"]}
    assert ours["calibration"]["plain"]["nll"] == pytest.approx(theirs["calibration"]["plain"]["nll"], abs=1e-5)


def _toy_onnx(path: Path, metadata: dict | None, input_type: int = 2, shape: tuple = ("N", 3, 32, 32)) -> Path:
    """A working 3-class model (the mean of each channel) with the given input and metadata."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["pixels"], ["logits"], axes=[2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("images", input_type, list(shape))],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
    return path


CNCNN_METADATA = {"classes": ["r", "g", "b"], "preprocess": {"resize": 40, "crop": 32}}


def test_a_toy_model_with_cncnn_metadata_runs(tmp_path, capsys):
    """The control for the refusals below: the same graph, right input and metadata, predicts."""
    model = _toy_onnx(tmp_path / "toy.onnx", CNCNN_METADATA)
    image = tmp_path / "red.png"
    Image.new("RGB", (50, 40), (200, 10, 10)).save(image)
    assert main(["predict", str(image), "--checkpoint", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"][0]["label"] == "r"


@pytest.mark.parametrize("case, expected", [
    ("no metadata", "an ONNX model without cncnn's metadata (no classes, preprocess); cncnn runs the files "
                    "`cncnn export CHECKPOINT.safetensors model.onnx` writes"),
    ("float input", "expects one input `images`, uint8 N×3×32×32"),
    ("wrong crop", "expects one input `images`, uint8 N×3×32×32"),
    ("damaged metadata", "its cncnn metadata is damaged"),
    ("not onnx", "not an ONNX model onnxruntime can load"),
    ("missing", "model.onnx: no such file"),
    ("no onnxruntime", 'needs the onnxruntime package, which is not installed: pip install "cncnn[export]"'),
    ("gpu", "--device cuda: "),
    ("compile", "--compile applies to .safetensors checkpoints"),
])
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_unusable_onnx_files_and_options_get_one_line_and_exit_2(tmp_path, monkeypatch, capsys, case, expected,
                                                                 command):
    model = tmp_path / "model.onnx"
    if case == "no metadata":
        _toy_onnx(model, None)
    elif case == "float input":
        _toy_onnx(model, CNCNN_METADATA, input_type=1)
    elif case == "wrong crop":
        _toy_onnx(model, CNCNN_METADATA, shape=("N", 3, 64, 64))
    elif case == "damaged metadata":
        _toy_onnx(model, {"classes": "r g b", "preprocess": {"resize": 40}})
    elif case == "not onnx":
        model.write_bytes(b"\x00 not a protobuf")
    elif case != "missing":
        _toy_onnx(model, CNCNN_METADATA)
    if case == "no onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    extra = {"gpu": ["--device", "cuda"], "compile": ["--compile"]}.get(case, [])
    image = fixtures.photo(tmp_path / "photo.png", seed=0)
    argv = (["predict", str(image), "--checkpoint", str(model)] if command == "predict"
            else ["eval", str(model), "--dataset", "imagefolder", "--data-root", str(tmp_path)])
    capsys.readouterr()
    assert main([*argv, *extra]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_benchmark_inference_measures_each_runtime_in_one_table(deploy_checkpoint, deploy_onnx, monkeypatch, capsys):
    monkeypatch.setenv("CXX", "/nonexistent/c++")  # inductor finds no compiler: the compile row says why
    capsys.readouterr()
    assert main(["benchmark", "--inference", "--checkpoint", str(deploy_checkpoint), "--onnx", str(deploy_onnx),
                 "--batch-size", "2", "--steps", "2", "--warmup", "0", "--threads", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["runtime"] for row in rows] == ["torch eager fp32", "torch bf16 autocast", "torch.compile fp32",
                                                 f"onnxruntime fp32 ({deploy_onnx.name})"]
    measured = [rows[0], rows[1], rows[3]]
    assert all(row["available"] and row["batch"] == 2 and row["threads"] == 1 and row["images_per_s"] > 0
               and row["peak_rss_mib"] > 0 and row["p50_ms"] <= row["p95_ms"] for row in measured)
    assert rows[0]["ratio"] == 1.0
    assert not rows[2]["available"] and "C++ compiler" in rows[2]["reason"] and rows[2]["images_per_s"] is None
    assert "top1" not in rows[0]  # no labelled set given
    # its own process: the onnxruntime row's memory holds no torch
    assert rows[3]["peak_rss_mib"] < rows[0]["peak_rss_mib"]


def test_benchmark_inference_scores_each_runtime_on_a_labelled_set(deploy_checkpoint, deploy_onnx, deploy_data,
                                                                   monkeypatch, capsys):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    capsys.readouterr()
    assert main(["eval", str(deploy_checkpoint), "--json", "--workers", "0", "--data-root", str(deploy_data)]) == 0
    expected = json.loads(capsys.readouterr().out)["top1"]
    assert main(["benchmark", "--inference", "--checkpoint", str(deploy_checkpoint), "--onnx", str(deploy_onnx),
                 "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1", "--dataset", "imagefolder",
                 "--data-root", str(deploy_data), "--json"]) == 0
    rows = {row["runtime"]: row for row in json.loads(capsys.readouterr().out)}
    eager, onnx_row = rows["torch eager fp32"], rows[f"onnxruntime fp32 ({deploy_onnx.name})"]
    assert eager["top1"] == pytest.approx(expected, abs=1e-3) and eager["top1_change"] == 0
    # the fp32 export gives the checkpoint's scores to 1e-7: the same argmax on every image
    assert onnx_row["top1"] == pytest.approx(expected, abs=1e-3) and onnx_row["top1_change"] == pytest.approx(0)
    bf16 = rows["torch bf16 autocast"]
    assert bf16["top1_change"] == pytest.approx(bf16["top1"] - eager["top1"])
    assert rows["torch.compile fp32"]["top1"] is None and rows["torch.compile fp32"]["top1_change"] is None


def test_benchmark_inference_limit_scores_the_first_images(deploy_checkpoint, deploy_data, capsys):
    from cncnn_cli.apis.inference_speed import _child

    spec = {"runtime": "torch eager fp32", "kind": "torch", "bf16": False, "path": str(deploy_checkpoint),
            "batch": 2, "threads": 1, "steps": 1, "warmup": 0,
            "labelled": {"dataset": {"type": "imagefolder", "data_root": str(deploy_data)}, "split": "test",
                         "limit": 1}}
    _child(json.dumps(spec))
    assert json.loads(capsys.readouterr().out)["top1"] in (0, 100)  # one image: right or wrong, nothing between


def test_benchmark_inference_refuses_a_labelled_set_of_other_classes(tmp_path, deploy_checkpoint, capsys):
    other = fixtures.make_imagefolder(tmp_path, classes=("a", "b"), counts={"train": 1, "test": 1})
    capsys.readouterr()
    assert main(["benchmark", "--inference", "--checkpoint", str(deploy_checkpoint), "--data-root", str(other)]) == 2
    assert "predicts 3 classes" in _one_error_line(capsys.readouterr().err)


def test_benchmark_inference_options_need_inference_and_a_checkpoint(deploy_onnx, capsys):
    assert main(["benchmark", "--onnx", str(deploy_onnx)]) == 2
    assert "also give --inference" in _one_error_line(capsys.readouterr().err)
    assert main(["benchmark", "--limit", "5"]) == 2
    assert "also give --inference" in _one_error_line(capsys.readouterr().err)
    assert main(["benchmark", "--inference"]) == 2
    assert "--inference needs --checkpoint" in _one_error_line(capsys.readouterr().err)
