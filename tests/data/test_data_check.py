"""`cncnn data check`: counts, sizes and modes; unreadable and missing files by name (exit 1); bad layouts (exit 2).

Unannotated files and differences from the published counts are notes that leave the exit code alone.
"""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cncnn_cli.cli.data import app
from cncnn_cli.data.check import check_dataset
from tests.helpers.datasets import (
    make_aircraft,
    make_cub,
    make_imagefolder,
    truncate,
    write_image,
)

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["check", *args])


def test_clean_dataset_reports_counts_sizes_and_modes(tmp_path):
    root = make_cub(tmp_path, num_classes=3, train_per_class=2, test_per_class=1)
    result = run("--dataset", "cub", "--data-root", str(root), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert report["ok"] and report["num_classes"] == 3
    assert train["num_images"] == 6 and test["num_images"] == 3
    assert train["per_class"] == {"Black footed Albatross": 2, "Laysan Albatross": 2, "Sooty Albatross": 2}
    assert train["modes"] == {"RGB": 4, "L": 1, "CMYK": 1}
    assert train["width"] == {"min": 48, "median": 48, "max": 48} and train["unreadable"] == []
    text = run("--dataset", "cub", "--data-root", str(root))
    assert text.exit_code == 0 and "Laysan Albatross" in text.stdout and "OK" in text.stdout


def test_truncated_image_is_reported_by_name_with_exit_1(tmp_path):
    root = make_aircraft(tmp_path)
    broken = truncate(root / "data" / "images" / "1000002.jpg")
    result = run("--dataset", "aircraft", "--data-root", str(root.parent))
    assert result.exit_code == 1
    assert str(broken) in result.stdout and "problem" in result.stdout
    report = json.loads(run("--dataset", "aircraft", "--data-root", str(root), "--json").stdout)
    assert [item["path"] for item in report["splits"]["train"]["unreadable"]] == [str(broken)]
    assert report["splits"]["test"]["unreadable"] == [] and not report["ok"]


def test_missing_annotation_file_exits_2_with_one_line(tmp_path):
    root = make_cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    result = run("--dataset", "cub", "--data-root", str(root))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cub: missing ") and str(root / "train_test_split.txt") in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_recipe_supplies_dataset_and_flags_override(tmp_path):
    root = make_imagefolder(tmp_path, counts={"train": 2, "val": 1})
    recipe = tmp_path / "mine.py"
    recipe.write_text(f"dataset = dict(type='imagefolder', data_root={str(tmp_path / 'elsewhere')!r})\n")
    assert run(str(recipe)).exit_code == 2
    result = run(str(recipe), "--data-root", str(root), "--json")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["splits"]) == ["train", "val"]
    demo = tmp_path / "demo.py"
    demo.write_text("dataset = dict(type='demo', num_classes=3, train_per_class=2, test_per_class=1, image_size=40)\n")
    report = json.loads(run(str(demo), "--split", "test", "--json").stdout)
    assert report["splits"]["test"]["per_class"] == {"red crown": 1, "yellow crown": 1, "green crown": 1}


def test_usage_errors_exit_2(tmp_path):
    assert run().exit_code == 2
    assert run("--dataset", "cub").exit_code == 2  # cub needs --data-root
    assert run("--dataset", "nope", "--data-root", str(tmp_path)).exit_code == 2
    assert run(str(tmp_path / "missing.py")).exit_code == 2


def test_train_class_without_images_is_a_problem(tmp_path):
    root = make_imagefolder(tmp_path)
    (root / "train" / "empty").mkdir()
    report = check_dataset("imagefolder", str(root))
    assert report.problems == ["split 'train': class 'empty' has no images"]
    assert Path(report.data_root) == root


def test_data_speed_measures_one_workers_throughput(capsys):
    from cncnn_cli.cli.main import main

    assert main(["data", "speed", "--dataset", "demo", "--image-size", "64", "--seconds", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "demo" and result["crop"] == 64 and result["images_per_s_per_worker"] > 0


def test_synthetic_jpegs_are_a_valid_imagefolder(tmp_path):
    from cncnn_cli.data.speed import loader_throughput, write_synthetic_jpegs

    root = write_synthetic_jpegs(tmp_path, count=4)
    result = loader_throughput({"type": "imagefolder", "data_root": str(root)}, image_size=64, seconds=0.2)
    assert result["images"] >= 1


def test_cub_missing_image_is_named_once_and_an_extra_one_is_a_note(tmp_path):
    root = make_cub(tmp_path)
    gone = root / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0002_5.jpg"
    gone.unlink()
    extra = write_image(root / "images" / "001.Black_footed_Albatross" / "stray.jpg", 0, 99)
    result = run("--dataset", "cub", "--data-root", str(root), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == [f"{gone}: listed in images.txt, file missing"]
    assert report["splits"]["train"]["unreadable"] == [] and report["unlisted_files"] == [str(extra)]
    assert "split 'train': 6 images, published 5,994 (5,988 fewer)" in report["differences_from_published"]


def test_aircraft_compares_counts_of_the_chosen_protocol_and_images_of_every_split(tmp_path):
    root = make_aircraft(tmp_path)
    extra = write_image(root / "data" / "images" / "2000000.jpg", 0, 99)
    report = check_dataset("aircraft", str(root), "test")
    assert report.ok and report.unlisted == [str(extra)]  # train and val images are not reported
    assert report.differences == [
        "split 'test': 3 images, published 3,333 (3,330 fewer)", "classes: 3 classes, published 100 (97 fewer)"
    ]
    assert check_dataset("aircraft", str(root), "train").differences[0].endswith("published 6,667 (6,658 fewer)")
    options = {"train_split": "train", "annotation_level": "family"}
    assert check_dataset("aircraft", str(root), "train", options).differences == [
        "split 'train': 6 images, published 3,334 (3,328 fewer)", "classes: 3 classes, published 70 (67 fewer)"
    ]


def test_generated_and_folder_datasets_have_no_annotation_notes(tmp_path):
    report = check_dataset("imagefolder", str(make_imagefolder(tmp_path)))
    assert report.ok and report.unlisted == [] and report.differences == []
    demo = check_dataset("demo", None, "test", {"num_classes": 2, "test_per_class": 1, "image_size": 32})
    assert demo.ok and demo.splits[0].missing == []
