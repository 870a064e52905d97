"""``cncnn export --quantize int8``: onnxruntime static quantization, verified against the fp32 graph."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cncnn_cli.apis import export as export_api
from cncnn_cli.cli.main import main
from cncnn_cli.deploy.quantize import Agreement

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("source", ["folder", "dataset", "fixed batch"])
def test_int8_export_is_qdq_per_channel_and_predicts_and_evaluates(tmp_path, deploy_checkpoint, deploy_data,
                                                                   source, capsys):
    out = tmp_path / "int8.onnx"
    calibration = {"folder": ["--calibration", str(deploy_data / "train")],
                   "dataset": ["--dataset", "imagefolder"],  # the checkpoint's own, at its data root
                   "fixed batch": ["--calibration", str(deploy_data / "train"), "--batch", "4"]}[source]
    # A random tiny model's classes are near ties, so its int8 answers may differ: the agreement is
    # reported, not required, here (the refusal has its own test below).
    assert main(["export", str(deploy_checkpoint), str(out), "--quantize", "int8", *calibration,
                 "--min-agreement", "0"]) == 0
    model = onnx.load(str(out))
    quantization = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])
    assert quantization["calibration_images"] == 9 and quantization["calibration_method"] == "minmax"
    assert quantization["verified_on"] == ("its test split" if source == "dataset" else "the calibration images")
    assert 0 <= quantization["top1_agreement"] <= 100 and quantization["verify_images"] == 9
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    weights = {i.name: i for i in model.graph.initializer}
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
                   and weights[n.input[0]].data_type == onnx.TensorProto.INT8 and len(weights[n.input[1]].dims) == 1]
    assert per_channel  # int8 weights with one scale per output channel
    capsys.readouterr()
    assert main(["predict", str(deploy_data / "test"), "--checkpoint", str(out), "--json",
                 "--batch-size", "4" if source == "fixed batch" else "16"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 9
    assert main(["eval", str(out), "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 9


def test_int8_below_the_agreement_writes_nothing(tmp_path, deploy_checkpoint, deploy_data, monkeypatch, capsys):
    out = tmp_path / "int8.onnx"
    out.write_bytes(b"an earlier file")
    monkeypatch.setattr(export_api, "agreement", lambda fp32, int8, images: Agreement(len(images), 75.0, 0.4))
    assert main(["export", str(deploy_checkpoint), str(out), "--quantize", "int8",
                 "--calibration", str(deploy_data / "train")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "agrees with the fp32 model's on 75.00% of 9 images" in line and "below --min-agreement 99%" in line
    assert out.read_bytes() == b"an earlier file" and sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


@pytest.mark.parametrize("case, expected", [
    ("no calibration", "--quantize int8 needs calibration images: --calibration DIR"),
    ("no readable image", "no readable image (looked for .jpg"),
    ("int4", "--quantize int4: expected int8"),
    ("method", "--calibration-method kl: expected one of minmax, entropy, percentile"),
    ("pt2", "--quantize int8 applies to ONNX exports only"),
    ("calibration alone", "also give --quantize int8"),
    ("no onnxruntime", 'needs the onnxruntime package, which is not installed: pip install "cncnn[export]"'),
])
def test_int8_refusals_get_one_line_and_exit_2(tmp_path, deploy_checkpoint, monkeypatch, capsys, case, expected):
    folder = tmp_path / "calibration"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / ("model.pt2" if case == "pt2" else "model.onnx")
    argv = {"no calibration": ["--quantize", "int8"], "int4": ["--quantize", "int4", "--calibration", str(folder)],
            "method": ["--quantize", "int8", "--calibration", str(folder), "--calibration-method", "kl"],
            "calibration alone": ["--calibration", str(folder)]}.get(case, ["--quantize", "int8",
                                                                            "--calibration", str(folder)])
    if case == "no onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    capsys.readouterr()
    assert main(["export", str(deploy_checkpoint), str(out), *argv]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)
    assert not out.exists()
