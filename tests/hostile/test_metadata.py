"""Checkpoint metadata as a careless editor or another tool leaves it: each missing or impossible
value is one line naming the file and the key, exit 2, before any work, for every command that
loads a checkpoint (they all go through ``read_checkpoint``'s schema)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from cncnn_cli.cli.main import main
from tests.helpers.datasets import make_imagefolder, write_image


def _crafted(source: Path, folder: Path, **changes) -> Path:
    """``source`` with metadata values replaced (a dict is JSON-encoded; None removes the key, and
    ``preprocess`` may be given as a dict of changes to its keys, None again removing one)."""
    with safe_open(str(source), framework="pt") as handle:
        meta = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    preprocess = json.loads(meta["preprocess"])
    for key, value in changes.pop("preprocess_keys", {}).items():
        if value is None:
            preprocess.pop(key)
        else:
            preprocess[key] = value
    meta["preprocess"] = json.dumps(preprocess)
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    path = folder / "edited.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def _one_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and all(part in lines[0] for part in parts), lines[0]


#: (metadata changes, what the error line must name)
FAULTS = {
    "resize missing": (dict(preprocess_keys={"resize": None}), "lacks preprocess.resize"),
    "crop of 0": (dict(preprocess_keys={"crop": 0}), "preprocess.crop = 0"),
    "resize of 0 by 0": (dict(preprocess_keys={"resize": [0, 0]}), "preprocess.resize.0"),
    "resize below crop": (dict(preprocess_keys={"resize": 16}), "resize 16 is smaller than crop 64"),
    "std with a zero": (dict(preprocess_keys={"std": [58.0, 0.0, 57.0]}), "preprocess.std.1"),
    "mean of two channels": (dict(preprocess_keys={"mean": [1.0, 2.0]}), "preprocess.mean"),
    "unknown preprocessing key": (dict(preprocess_keys={"resise": 72}), "preprocess.resise"),
    "preprocess missing": (dict(preprocess=None), "lacks preprocess"),
    "no class names": (dict(classes=[]), "classes"),
    "an empty class name": (dict(classes=["bird 0", "", "bird 2", "bird 3", "bird 4"]), "classes.1"),
    "model not a dict": (dict(model=[1, 2]), "its metadata holds model = [1, 2]"),
    "preprocess not JSON": (dict(preprocess="{resize: 72"), "preprocess is not valid JSON"),
    "unknown embedding": (dict(embedding='"pooled"'), "embedding = 'pooled'"),
    "temperature of 0": (dict(temperature=0), "temperature = 0"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_predict_names_the_file_and_the_key(fault, tmp_path, cncnn_checkpoint, capsys):
    changes, named = FAULTS[fault]
    broken = _crafted(cncnn_checkpoint, tmp_path, **changes)
    out = tmp_path / "r.csv"
    image = write_image(tmp_path / "x.jpg", 0, 0)
    assert main(["predict", str(image), "--checkpoint", str(broken), "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, str(broken), named)
    assert not out.exists()


@pytest.mark.parametrize("fault", ["resize missing", "crop of 0", "std with a zero"])
def test_eval_visualize_and_export_refuse_the_same_way(fault, tmp_path, cncnn_checkpoint, capsys):
    changes, named = FAULTS[fault]
    broken = _crafted(cncnn_checkpoint, tmp_path, **changes)
    data = make_imagefolder(tmp_path / "data", classes=tuple(f"bird {i}" for i in range(5)),
                            counts={"train": 1, "test": 1})
    image = write_image(tmp_path / "x.jpg", 0, 0)
    out = tmp_path / "out"
    commands = {
        "eval": ["eval", str(broken), "--dataset", "imagefolder", "--data-root", str(data), "--workers", "0",
                 "--out", str(out)],
        "visualize": ["visualize", str(image), "--checkpoint", str(broken), "--out", str(out)],
        "export": ["export", str(broken), str(out / "model.onnx"), "--no-verify"],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        _one_line(capsys.readouterr().err, str(broken), named)
        assert not out.exists(), name


def test_a_checkpoint_without_mean_and_std_gets_imagenet_s_and_exports(tmp_path, cncnn_checkpoint):
    """Older or hand-made files may lack the normalization: the schema's defaults fill it, so the
    exported file's metadata never meets a missing key."""
    onnx = pytest.importorskip("onnx")
    lean = _crafted(cncnn_checkpoint, tmp_path, preprocess_keys={"mean": None, "std": None})
    out = tmp_path / "model.onnx"
    assert main(["export", str(lean), str(out), "--no-verify"]) == 0
    stored = {prop.key: json.loads(prop.value) for prop in onnx.load(str(out)).metadata_props}
    assert stored["preprocess"]["mean"] == [123.675, 116.28, 103.53]
    assert stored["preprocess"]["std"] == [58.395, 57.12, 57.375]
