"""eval and export on a full disk, eval on a dataset whose class names differ, and the data root eval names."""
from __future__ import annotations

import builtins
import errno
import json
from pathlib import Path

import pytest

from cncnn_cli.apis import export as export_api
from cncnn_cli.cli import evaluate as evaluate_cli
from cncnn_cli.cli.main import main
from cncnn_cli.evaluation.evaluate import class_name_note
from cncnn_cli.models.classifier import build_model
from cncnn_cli.weights.checkpoint import Checkpoint, save_checkpoint
from tests.helpers import datasets as fixtures
from tests.helpers.faults import FullDisk

ENOSPC = "No space left on device"


def _full_disk_open(fails=lambda path: True):
    """``open`` as a module sees it, with writes to the files ``fails`` picks failing."""

    def fake_open(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return FullDisk(handle) if any(c in mode for c in "wax") and fails(Path(file)) else handle

    return fake_open


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def abc_data(tmp_path) -> Path:
    return fixtures.make_imagefolder(tmp_path / "data", classes=("a", "b", "c"), counts={"train": 1, "test": 2})


@pytest.fixture()
def abc_checkpoint(tmp_path, abc_data) -> Path:
    """A tiny 3-class baseline trained (as far as the checkpoint says) on imagefolder a, b, c at ``abc_data``."""
    model_cfg = dict(type="baseline", num_classes=3, backbone=dict(type="resnet18", pretrained=None))
    path = tmp_path / "abc.safetensors"
    save_checkpoint(path, build_model(model_cfg).state_dict(),
                    Checkpoint(model=model_cfg, classes=["a", "b", "c"], preprocess={"resize": 40, "crop": 32},
                               dataset={"type": "imagefolder", "data_root": str(abc_data)}))
    return path


# --- eval --out on a full disk ---------------------------------------------------------------------------------

@pytest.mark.parametrize("failing", ["per_class.csv", "predictions.jsonl"])
def test_eval_report_on_a_full_disk_is_one_line_exit_1_and_no_partial_file(failing, abc_checkpoint, tmp_path,
                                                                            monkeypatch, capsys):
    out = tmp_path / "small" / "ev"
    args = ["eval", str(abc_checkpoint), "--workers", "0", "--json"]
    assert main(args) == 0
    expected = json.loads(capsys.readouterr().out)
    out.mkdir(parents=True)
    (out / "predictions.jsonl").write_text("earlier run\n")
    monkeypatch.setattr(evaluate_cli, "open", _full_disk_open(lambda p: p.name.startswith(f".{failing}")),
                        raising=False)
    assert main([*args, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == expected  # the results come first and are right
    line = _one_error_line(captured.err)
    assert line == (f"error: could not write {out / failing}: {ENOSPC} (earlier files there are intact); "
                    f"free disk space or pass another --out")
    assert (out / "predictions.jsonl").read_text() == "earlier run\n"  # the earlier file, not half of a new one
    assert _visible(out) == ["per_class.csv", "predictions.jsonl"] if failing == "predictions.jsonl" else \
        ["predictions.jsonl"]  # and no empty per_class.csv, no temporary file


def test_eval_figure_on_a_full_disk_is_one_line_and_keeps_the_tables(abc_checkpoint, tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure

    def full(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"")  # the file is created, then the disk fills
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(Figure, "savefig", full)
    out = tmp_path / "ev"
    assert main(["eval", str(abc_checkpoint), "--workers", "0", "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: could not write {out / 'confusion.png'}: {ENOSPC} (earlier files")
    assert _visible(out) == ["per_class.csv", "predictions.jsonl"]


def test_eval_out_naming_a_file_is_bad_input_before_any_work(abc_checkpoint, tmp_path, capsys):
    (tmp_path / "report").write_text("not a folder")
    assert main(["eval", str(abc_checkpoint), "--workers", "0", "--out", str(tmp_path / "report")]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith(f"error: --out {tmp_path / 'report'}: expected a folder")


# --- class names and data roots -----------------------------------------------------------------------------------

def test_eval_on_classes_named_otherwise_notes_it_and_still_reports(abc_checkpoint, tmp_path, capsys):
    other = fixtures.make_imagefolder(tmp_path / "other", classes=("a", "x", "y"), counts={"train": 1, "test": 2})
    assert main(["eval", str(abc_checkpoint), "--dataset", "imagefolder", "--data-root", str(other),
                 "--workers", "0", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_images"] == 6
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: the classes of imagefolder at {other} differ from the checkpoint's by name "
                     f"(x≠b, y≠c); accuracy assumes class i is the same class in both"]


def test_eval_on_the_same_classes_says_nothing_about_names(abc_checkpoint, capsys):
    assert main(["eval", str(abc_checkpoint), "--workers", "0", "--json"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_class_name_note_truncates_long_lists_and_spots_a_new_order():
    trained = [f"class {i}" for i in range(10)]
    note = class_name_note(trained, [f"other {i}" for i in range(10)], "cub at data")
    assert note.startswith("note: the classes of cub at data differ from the checkpoint's by name (other 0≠class 0, "
                           "other 1≠class 1, other 2≠class 2, … 7 more of 10)")
    reordered = class_name_note(["a", "b", "c"], ["b", "a", "c"], "imagefolder at d")
    assert "(the same names in another order) (b≠a, a≠b)" in reordered
    assert class_name_note(trained, list(trained), "x") is None


def test_eval_on_a_dataset_without_a_root_names_no_root(abc_checkpoint, abc_data, capsys):
    assert main(["eval", str(abc_checkpoint), "--dataset", "demo", "--workers", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: {abc_checkpoint} predicts 3 classes but demo (no data root) has 10; evaluate on the "
                    f"dataset it was trained for")
    assert str(abc_data) not in line


def test_eval_on_another_dataset_names_the_root_it_was_given(abc_checkpoint, tmp_path, capsys):
    five = fixtures.make_imagefolder(tmp_path / "five", classes=tuple("pqrst"), counts={"train": 1, "test": 1})
    assert main(["eval", str(abc_checkpoint), "--data-root", str(five), "--workers", "0"]) == 2
    assert f"imagefolder at {five} has 5" in _one_error_line(capsys.readouterr().err)


def test_eval_on_another_dataset_that_needs_a_root_asks_for_it(abc_checkpoint, abc_data, capsys):
    assert main(["eval", str(abc_checkpoint), "--dataset", "cub", "--workers", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --dataset cub: also pass --data-root DIR")  # not the imagefolder's root


# --- export on a full disk ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("suffix", "earlier"), [(".pt2", False), (".pt2", True), (".onnx", True)])
def test_export_on_a_full_disk_is_one_line_exit_1_and_writes_nothing(suffix, earlier, cncnn_checkpoint, tmp_path,
                                                                     monkeypatch, capsys):
    if suffix == ".onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    out = tmp_path / "small" / f"m{suffix}"
    out.parent.mkdir()
    if earlier:
        out.write_text("previous export")
    monkeypatch.setattr(export_api, "open", _full_disk_open(), raising=False)
    assert main(["export", str(cncnn_checkpoint), str(out)]) == 1
    kept = " (an earlier file there is intact)" if earlier else ""
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: could not write {out}: {ENOSPC}; nothing was written{kept}. Free disk space or choose another folder.")
    assert _visible(out.parent) == ([out.name] if earlier else [])
    if earlier:
        assert out.read_text() == "previous export"


def test_export_sidecar_on_a_full_disk_leaves_neither_file(cncnn_checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.pt2"
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".m.pt2.json"):
            raise OSError(errno.ENOSPC, ENOSPC)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["export", str(cncnn_checkpoint), str(out), "--no-verify"]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: could not write {out}.json: {ENOSPC}; nothing was written. Free disk space or choose another folder.")
    assert _visible(tmp_path) == []
