"""predict when things go wrong: a full disk, Ctrl-C, broken weights, edited metadata, empty folders,
and a --checkpoint that names a work dir or a training state. One line on stderr each, never a traceback,
never a half-written file, never invalid JSON."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import cncnn_cli.cli.predict as predict_module
from cncnn_cli.apis.inference import Predictor
from cncnn_cli.cli.main import main
from cncnn_cli.errors import CheckpointError
from cncnn_cli.weights.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from tests.helpers.datasets import random_pngs
from tests.helpers.faults import FullDisk


def _one_error_line(err: str, *expected: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_full_disk_leaves_the_earlier_out_file_intact_and_no_part_file(tmp_path, cncnn_checkpoint, capsys,
                                                                          monkeypatch, suffix):
    random_pngs(tmp_path / "photos", 5)
    out = tmp_path / "small" / f"p{suffix}"
    out.parent.mkdir()
    out.write_text("earlier results\n")

    def full_disk_open(*args, **kwargs):
        return FullDisk(open(*args, **kwargs), budget=300)

    monkeypatch.setattr(predict_module, "open", full_disk_open, raising=False)
    code = main(["predict", str(tmp_path / "photos"), "--checkpoint", str(cncnn_checkpoint), "--out", str(out),
                 "--batch-size", "2", "--topk", "3"])
    captured = capsys.readouterr()
    assert code == 1
    _one_error_line(captured.err, f"could not write {out}", "No space left on device", "intact")
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # the part file is gone


def test_a_full_disk_without_an_earlier_file_says_nothing_was_written(tmp_path, cncnn_checkpoint, capsys,
                                                                      monkeypatch):
    image = random_pngs(tmp_path / "photos", 1)[0]
    out = tmp_path / "p.jsonl"
    monkeypatch.setattr(predict_module, "open", lambda *a, **k: FullDisk(open(*a, **k), budget=0), raising=False)
    assert main(["predict", str(image), "--checkpoint", str(cncnn_checkpoint), "--out", str(out)]) == 1
    _one_error_line(capsys.readouterr().err, "No space left on device", "nothing was written")
    assert not list(tmp_path.glob("p.jsonl*"))


def test_out_streams_into_a_part_file_and_is_renamed_once_complete(tmp_path, cncnn_checkpoint, capsys, monkeypatch):
    random_pngs(tmp_path / "photos", 5)
    out = tmp_path / "p.jsonl"
    out.write_text("earlier\n")
    part = tmp_path / "p.jsonl.part"
    seen = []
    forward = Predictor.forward

    def watching(self, batch):
        seen.append((part.read_text().count("\n") if part.exists() else None, out.read_text()))
        return forward(self, batch)

    monkeypatch.setattr(Predictor, "forward", watching)
    assert main(["predict", str(tmp_path / "photos"), "--checkpoint", str(cncnn_checkpoint), "--out", str(out),
                 "--batch-size", "2"]) == 0
    assert seen == [(0, "earlier\n"), (2, "earlier\n"), (4, "earlier\n")]  # it grows; OUT waits until the end
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 5
    assert not part.exists()


@pytest.mark.parametrize("flags", [["--jsonl"], ["--out", "p.jsonl"], ["--out", "p.csv"], ["--json"]])
def test_ctrl_c_says_how_many_results_were_written_and_where(tmp_path, cncnn_checkpoint, capsys, monkeypatch,
                                                             flags):
    random_pngs(tmp_path / "photos", 5)
    monkeypatch.chdir(tmp_path)
    forward, calls = Predictor.forward, []

    def interrupted_at_the_second_batch(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(self, batch)

    monkeypatch.setattr(Predictor, "forward", interrupted_at_the_second_batch)
    code = main(["predict", "photos", "--checkpoint", str(cncnn_checkpoint), "--batch-size", "2", *flags])
    captured = capsys.readouterr()
    assert code == 130
    _one_error_line(captured.err, "interrupted after 2 images")
    if flags == ["--jsonl"]:
        assert len([json.loads(line) for line in captured.out.splitlines()]) == 2
        assert "2 results were written to stdout" in captured.err
    elif flags[0] == "--out":
        out = Path(flags[1])
        assert not out.exists() and f"{out}.part" in captured.err and f"{out} was not written" in captured.err
        text = Path(f"{out}.part").read_text()
        rows = list(csv.DictReader(text.splitlines())) if out.suffix == ".csv" else \
            [json.loads(line) for line in text.splitlines()]
        assert [Path(row["image"]).name for row in rows] == ["img_00000.png", "img_00001.png"]
    else:
        assert captured.out == "" and "nothing was printed" in captured.err


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory, cncnn_checkpoint) -> Path:
    info, weights = read_checkpoint(cncnn_checkpoint)
    broken = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    path = tmp_path_factory.mktemp("nan") / "nan.safetensors"
    save_checkpoint(path, broken, Checkpoint(**info.__dict__))
    return path


@pytest.mark.parametrize("flag", ["--json", "--jsonl"])
def test_broken_weights_are_an_error_never_nan_in_json(tmp_path, nan_checkpoint, capsys, flag):
    image = random_pngs(tmp_path, 1)[0]
    assert main(["predict", str(image), "--checkpoint", str(nan_checkpoint), flag]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_error_line(captured.err, f"{nan_checkpoint} produces non-finite scores for {image}", "NaN/inf")


def test_broken_weights_discard_the_out_part_file(tmp_path, nan_checkpoint, capsys):
    image = random_pngs(tmp_path, 1)[0]
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(image), "--checkpoint", str(nan_checkpoint), "--out", str(out)]) == 1
    _one_error_line(capsys.readouterr().err, "non-finite")
    assert not list(tmp_path.glob("p.jsonl*"))


def test_class_names_that_disagree_with_the_weights_are_refused_at_load(tmp_path, cncnn_checkpoint, capsys):
    info, weights = read_checkpoint(cncnn_checkpoint)
    edited = tmp_path / "edited.safetensors"
    save_checkpoint(edited, weights, Checkpoint(**{**info.__dict__, "classes": ["a", "b", "c"]}))
    image = random_pngs(tmp_path, 1)[0]
    assert main(["predict", str(image), "--checkpoint", str(edited), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_error_line(captured.err, f"{edited}: its metadata lists 3 class names but the weights have 5 outputs")
    with pytest.raises(CheckpointError, match="3 class names"):
        Predictor.from_checkpoint(edited, device="cpu")


def test_a_lone_empty_folder_is_one_error_and_nothing_on_stdout(tmp_path, cncnn_checkpoint, capsys):
    empty = tmp_path / "emptydir"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    assert main(["predict", str(empty), "--checkpoint", str(cncnn_checkpoint), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_error_line(captured.err, f"{empty}: no images found", ".jpg", ".png")


def test_an_empty_folder_among_other_inputs_is_an_error_entry_like_a_missing_file(tmp_path, cncnn_checkpoint,
                                                                                   capsys):
    image = random_pngs(tmp_path / "photos", 1)[0]
    empty = tmp_path / "emptydir"
    empty.mkdir()
    assert main(["predict", str(empty), str(image), "--checkpoint", str(cncnn_checkpoint), "--json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document[0]["image"] == str(empty) and "no images found" in document[0]["error"]
    assert document[1]["image"] == str(image) and "predictions" in document[1]
    _one_error_line(captured.err, f"error: {empty}: no images found")


class _Payload:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_work_dir_as_checkpoint_names_the_weights_file_in_it(tmp_path, cncnn_checkpoint, capsys):
    image = str(random_pngs(tmp_path, 1)[0])
    run = tmp_path / "run1"
    run.mkdir()
    assert main(["predict", image, "--checkpoint", str(run)]) == 2
    _one_error_line(capsys.readouterr().err, f"{run} is a folder, not a checkpoint file")
    (run / "best.safetensors").write_bytes(cncnn_checkpoint.read_bytes())
    assert main(["predict", image, "--checkpoint", str(run)]) == 2
    _one_error_line(capsys.readouterr().err, f"{run} is a folder; pass {run / 'best.safetensors'}")


@pytest.mark.parametrize("name, zipped", [("state.pth", True), ("backup.pth", True), ("old_state.pth", False)])
def test_a_training_state_as_checkpoint_is_named_as_such_and_never_unpickled(tmp_path, cncnn_checkpoint, capsys,
                                                                              name, zipped):
    image = str(random_pngs(tmp_path, 1)[0])
    run = tmp_path / "run1"
    run.mkdir()
    for weights in ("best.safetensors", "last.safetensors"):
        (run / weights).write_bytes(cncnn_checkpoint.read_bytes())
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    state = {"state_dict": {"w": torch.zeros(2)}, "optimizer": {"state": {}}, "message_hub": {"x": payload}}
    torch.save(state, run / name, _use_new_zipfile_serialization=zipped)
    assert main(["predict", image, "--checkpoint", str(run / name)]) == 2
    _one_error_line(capsys.readouterr().err, f"{run / name} is a training state ({name}), not weights: pass "
                                             f"{run / 'best.safetensors'} or {run / 'last.safetensors'}")
    assert not payload.marker.exists()


def test_released_pytorch_weights_as_checkpoint_point_to_convert(tmp_path, official_state, capsys):
    image = str(random_pngs(tmp_path, 1)[0])
    path = tmp_path / "cub.pth"
    torch.save(official_state, path)
    assert main(["predict", image, "--checkpoint", str(path)]) == 2
    _one_error_line(capsys.readouterr().err, "a PyTorch file, not a cncnn checkpoint", "cncnn convert official")


def test_a_checkpoint_from_a_newer_format_asks_for_an_upgrade(tmp_path, cncnn_checkpoint):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(cncnn_checkpoint), framework="pt") as handle:
        meta = dict(handle.metadata())
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    future = tmp_path / "future.safetensors"
    save_file(state, str(future), metadata={**meta, "format_version": "99"})
    with pytest.raises(CheckpointError, match="checkpoint format '99'.*this cncnn reads format 1. Upgrade cncnn"):
        read_checkpoint(future)
