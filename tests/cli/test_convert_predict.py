"""convert official → predict --json matches docs/model.md's equations; weights never run code."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cncnn_cli.weights.checkpoint import read_checkpoint
from cncnn_cli.cli.main import main
from cncnn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from tests.helpers.reference import cncnn_logits

IMAGE_SIZE = 64


def _image(path: Path, mode: str = "RGB", seed: int = 0, size=(80, 72)) -> Path:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    rgb.convert(mode).save(path) if mode != "I;16" else Image.fromarray(
        rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16)).save(path)
    return path


def _reference_probabilities(state, path: Path, preprocess: dict) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    x = build_transform(preprocess, train=False)(image).float().unsqueeze(0)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return torch.softmax(cncnn_logits(state, "resnet18", x)["ensemble"], 1)[0]


def test_converted_checkpoint_is_self_describing(converted_checkpoint):
    info, state = read_checkpoint(converted_checkpoint)
    assert info.model["num_classes"] == 5 and info.model["head"]["hidden"] == 16
    assert info.model["fusion"] == {"type": "convlstm", "channels": 32}
    assert info.model["backbone"]["type"] == "resnet18"
    assert info.classes[3] == "bird 3"
    assert info.preprocess["crop"] == 448
    assert state["fusion.convlstm.conv.weight"].shape == (128, 64, 3, 3)


def test_predict_json_matches_a_forward_pass_written_from_model_md(tmp_path, official_state, capsys):
    src = tmp_path / "official.pth"
    torch.save(official_state, src)
    dst = tmp_path / "small.safetensors"
    assert main(["convert", "official", str(src), str(dst)]) == 0
    # Shrink the preprocessing so the test stays fast; the weights are what is checked.
    from cncnn_cli.weights.checkpoint import Checkpoint, save_checkpoint
    info, weights = read_checkpoint(dst)
    info.preprocess.update(resize=IMAGE_SIZE + 8, crop=IMAGE_SIZE)
    save_checkpoint(dst, weights, Checkpoint(**info.__dict__))
    images = [_image(tmp_path / f"img{i}.png", seed=i) for i in range(3)]
    capsys.readouterr()
    assert main(["predict", *map(str, images), "--checkpoint", str(dst), "--json", "--topk", "5",
                 "--batch-size", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [entry["image"] for entry in document] == [str(p) for p in images]
    for entry, path in zip(document, images):
        expected = _reference_probabilities(official_state, path, info.preprocess)
        scores = [p["score"] for p in entry["predictions"]]
        assert scores == sorted(scores, reverse=True)
        for p in entry["predictions"]:
            assert p["label"] == f"class_{p['index']:03d}"
            assert abs(p["score"] - expected[p["index"]].item()) < 1e-5


def test_convert_reports_missing_keys_by_name(tmp_path, official_state):
    broken = dict(official_state)
    del broken["apn.A4_1.conv.weight"]
    src = tmp_path / "broken.pth"
    torch.save(broken, src)
    assert main(["convert", "official", str(src), str(tmp_path / "out.safetensors")]) == 2
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_names_ignored_extra_keys(tmp_path, official_state, capsys):
    extra = dict(official_state, **{"fc.weight": torch.zeros(3, 512), "fc.bias": torch.zeros(3)})
    src = tmp_path / "extra.pth"
    torch.save(extra, src)
    assert main(["convert", "official", str(src), str(tmp_path / "out.safetensors")]) == 0
    assert "fc.weight" in capsys.readouterr().err


def test_convert_rejects_a_class_file_of_the_wrong_length(tmp_path, official_state, capsys):
    src = tmp_path / "official.pth"
    torch.save(official_state, src)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    assert main(["convert", "official", str(src), str(tmp_path / "o.safetensors"), "--classes", str(names)]) == 2
    assert "2 names" in capsys.readouterr().err


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_pth(tmp_path, official_state) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({**official_state, "extra": payload}, handle)
    torch.save({**official_state, "extra": payload}, path)
    return path, marker


def test_a_pickled_payload_never_runs_in_convert_or_predict(tmp_path, official_state, capsys):
    path, marker = _evil_pth(tmp_path, official_state)
    assert main(["convert", "official", str(path), str(tmp_path / "o.safetensors")]) == 2
    assert main(["predict", str(_image(tmp_path / "x.png")), "--checkpoint", str(path)]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights-only" in err


def test_bad_checkpoints_get_one_clear_line_and_exit_2(tmp_path, converted_checkpoint, capsys):
    image = str(_image(tmp_path / "x.png"))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(converted_checkpoint.read_bytes()[:5000])
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    other = tmp_path / "other.safetensors"
    info, weights = read_checkpoint(converted_checkpoint)
    from cncnn_cli.weights.checkpoint import Checkpoint, save_checkpoint
    info.model["head"]["hidden"] = 32  # metadata that does not fit the weights
    save_checkpoint(other, weights, Checkpoint(**info.__dict__))
    for path, expected in ((truncated, "truncated"), (foreign, "not a cncnn checkpoint"),
                           (other, "another model"), (tmp_path / "missing.safetensors", "no such")):
        capsys.readouterr()
        assert main(["predict", image, "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16", "exif"])
def test_predict_handles_every_image_mode(tmp_path, converted_checkpoint, capsys, mode):
    if mode == "exif":
        path = tmp_path / "rotated.jpg"
        image = Image.new("RGB", (90, 60), (200, 30, 30))
        exif = image.getexif()
        exif[0x0112] = 6  # rotate 90° on display
        image.save(path, exif=exif)
    elif mode == "CMYK":
        path = _image(tmp_path / "cmyk.jpg", "CMYK")
    else:
        path = _image(tmp_path / f"img_{mode.replace(';', '')}.png", mode)
    assert main(["predict", str(path), "--checkpoint", str(converted_checkpoint), "--json", "--topk", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document[0]["predictions"]) == 2


def test_unreadable_inputs_get_error_entries_and_the_rest_are_predicted(tmp_path, converted_checkpoint, capsys):
    good = _image(tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["predict", str(good), str(corrupt), str(text), "--checkpoint", str(converted_checkpoint), "--json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert "predictions" in document[0]
    assert "error" in document[1] and "corrupt.jpg" in document[1]["error"]
    assert "error" in document[2]
    assert "Traceback" not in captured.err


def test_directories_are_walked_and_the_default_checkpoint_is_the_newest_best(tmp_path, converted_checkpoint, capsys,
                                                                              monkeypatch):
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i in range(3):
        _image(folder / f"p{i}.jpg", seed=i)
    run = tmp_path / "work_dirs" / "demo"
    run.mkdir(parents=True)
    (run / "best.safetensors").write_bytes(converted_checkpoint.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "photos", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 3
    assert "work_dirs/demo/best.safetensors" in captured.err


def test_predict_without_any_checkpoint_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "img.jpg"]) == 2
    assert "cncnn train demo" in capsys.readouterr().err


def test_python_api(tmp_path, converted_checkpoint):
    from cncnn_cli.apis.inference import Predictor

    predictor = Predictor.from_checkpoint(converted_checkpoint, device="cpu")
    results = predictor.predict([_image(tmp_path / "a.png"), Image.new("RGB", (50, 50))], topk=3)
    assert [len(r.predictions) for r in results] == [3, 3]
    assert abs(sum(p["score"] for p in Predictor.from_checkpoint(converted_checkpoint).predict(
        [Image.new("RGB", (50, 50))], topk=5)[0].predictions) - 1) < 1e-5
