"""Text that is not UTF-8: file names in every output (written with one policy: a byte that is not
UTF-8 becomes ``\\xNN``), and classes files and recipes in another encoding (one line, exit 2)."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch

from cncnn_cli.cli.main import main
from tests.helpers import datasets as fixtures
from tests.helpers.datasets import random_pngs, write_image

#: ``café.png`` named in Latin-1, as Python sees it (surrogateescape), and as cncnn writes it.
LATIN1_NAME = os.fsdecode(b"caf\xe9.png")
WRITTEN = "caf\\xe9.png"


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    random_pngs(folder, 1)
    write_image(folder / LATIN1_NAME, 0, 1)
    return folder


def utf8(path: Path) -> str:
    """The file's text, failing unless it is valid UTF-8."""
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("fmt", ["out.csv", "out.jsonl", "--json", "--jsonl", "table"])
def test_a_file_name_that_is_not_utf8_survives_every_predict_output(tmp_path, photos, cncnn_checkpoint, capsysbinary,
                                                                     fmt):
    out = tmp_path / fmt
    flags = ["--out", str(out)] if fmt.startswith("out.") else [] if fmt == "table" else [fmt]
    assert main(["predict", str(photos), "--checkpoint", str(cncnn_checkpoint), *flags]) == 0
    stdout = capsysbinary.readouterr().out.decode("utf-8")
    if fmt == "out.csv":
        images = [row["image"] for row in csv.DictReader(io.StringIO(utf8(out)))]
    elif fmt == "out.jsonl":
        images = [json.loads(line)["image"] for line in utf8(out).splitlines()]
    elif fmt == "--json":
        images = [entry["image"] for entry in json.loads(stdout)]
    elif fmt == "--jsonl":
        images = [json.loads(line)["image"] for line in stdout.splitlines()]
    else:
        images = [name for name in (WRITTEN, "img_00000.png") if name in stdout]
    assert sorted(Path(image).name for image in images) == [WRITTEN, "img_00000.png"]


def test_image_paths_read_from_stdin_may_be_any_bytes(photos, cncnn_checkpoint, capsys, monkeypatch):
    names = b"".join(os.fsencode(path) + b"\n" for path in sorted(photos.iterdir()))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(names), encoding="utf-8"))
    assert main(["predict", "-", "--checkpoint", str(cncnn_checkpoint), "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["image"]).name for line in lines] == [WRITTEN, "img_00000.png"]
    assert all("predictions" in line for line in lines)


def test_eval_reports_hold_names_that_are_not_utf8(tmp_path, cncnn_checkpoint, capsys):
    root = fixtures.make_imagefolder(tmp_path / "data", classes=tuple("abcde"), counts={"train": 1, "test": 1})
    write_image(root / "test" / "a" / LATIN1_NAME, 0, 7)
    out = tmp_path / "report"
    assert main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(root),
                 "--workers", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    predictions = [json.loads(line) for line in utf8(out / "predictions.jsonl").splitlines()]
    assert WRITTEN in {Path(p["image"]).name for p in predictions}
    assert len(list(csv.DictReader(io.StringIO(utf8(out / "per_class.csv"))))) == 5


@pytest.mark.parametrize("as_json", [True, False])
def test_data_check_reports_names_that_are_not_utf8(tmp_path, capsysbinary, as_json):
    root = fixtures.make_imagefolder(tmp_path / "data")
    broken = root / "train" / "cat" / LATIN1_NAME
    broken.write_bytes(b"not an image")
    assert main(["data", "check", "--dataset", "imagefolder", "--data-root", str(root),
                 *(["--json"] if as_json else [])]) == 1  # the broken image is a problem
    stdout = capsysbinary.readouterr().out.decode("utf-8")
    if as_json:
        [unreadable] = json.loads(stdout)["splits"]["train"]["unreadable"]
        assert unreadable["path"].endswith(WRITTEN)
    else:
        assert WRITTEN in stdout


LATIN1_TEXT = "# Vögel, café\n".encode("latin-1")


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_latin1_classes_file_is_one_line_naming_the_byte(tmp_path, capsys):
    from tests.helpers.reference import random_official_state

    src = tmp_path / "official.pth"
    torch.save(random_official_state("resnet18", channels=32, hidden=16, num_classes=2), src)
    classes = tmp_path / "classes.txt"
    classes.write_bytes("Möwe\nSchwan\n".encode("latin-1"))
    dst = tmp_path / "converted.safetensors"
    assert main(["convert", "official", str(src), str(dst), "--classes", str(classes)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(classes) in line and "byte 0xf6 at offset 1" in line and "iconv" in line
    assert not dst.exists()


def test_a_classes_file_with_a_utf8_byte_order_mark_is_read_without_it(tmp_path, capsys):
    from cncnn_cli.weights.checkpoint import read_checkpoint
    from tests.helpers.reference import random_official_state

    src = tmp_path / "official.pth"
    torch.save(random_official_state("resnet18", channels=32, hidden=16, num_classes=2), src)
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffMöwe\r\nSchwan\r\n".encode("utf-8"))
    dst = tmp_path / "converted.safetensors"
    assert main(["convert", "official", str(src), str(dst), "--classes", str(classes)]) == 0
    assert read_checkpoint(dst)[0].classes == ["Möwe", "Schwan"]


def test_a_latin1_recipe_is_one_line_naming_it(tmp_path, capsys):
    recipe = tmp_path / "mine.py"
    recipe.write_bytes(LATIN1_TEXT + b"dataset = dict(type='demo')\n")
    assert main(["data", "check", str(recipe)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(recipe) in line and "not UTF-8" in line and "byte 0xf6 at offset 3, line 1" in line


def test_a_latin1_base_recipe_is_named_not_the_recipe_that_uses_it(tmp_path, capsys):
    base = tmp_path / "base.py"
    base.write_bytes(LATIN1_TEXT + b"dataset = dict(type='demo')\n")
    recipe = tmp_path / "mine.py"
    recipe.write_text("_base_ = ['./base.py']\n", encoding="utf-8")
    assert main(["data", "check", str(recipe)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(base) in line and "not UTF-8" in line


def test_a_latin1_annotation_file_of_a_published_layout_is_one_line(tmp_path, capsys):
    root = fixtures.make_cub(tmp_path / "data")
    classes = root / "classes.txt"
    classes.write_bytes(classes.read_bytes().replace(b"Albatross", "Albatroß".encode("latin-1"), 1))
    assert main(["data", "check", "--dataset", "cub", "--data-root", str(root)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(classes) in line and "not UTF-8" in line and "iconv" in line


def test_a_file_name_that_looks_like_rich_markup_is_printed_as_written(tmp_path, cncnn_checkpoint, capsys):
    folder = tmp_path / "photos"
    write_image(folder / "[red]bird[/red].png", 0, 1)
    assert main(["predict", str(folder), "--checkpoint", str(cncnn_checkpoint)]) == 0
    assert "[red]bird[/red].png" in capsys.readouterr().out
