"""cncnn writes only files it owns: a user's folder given as a work dir, an output that is its own
input, a resume with another model. Every case compares the user's folder byte for byte before and
after, and expects one line on stderr and exit 2.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from cncnn_cli.cli.main import main
from cncnn_cli.engine.lock import LOCK_FILE
from cncnn_cli.engine.workdir import CONFIG_FILE, RUN_FILES
from tests.helpers import datasets as fixtures
from tests.helpers.configs import DEMO, TINY
from tests.helpers.files import snapshot
from tests.helpers.reference import random_official_state

#: One tiny epoch of the demo set.
ONE_EPOCH = [*TINY, *DEMO, "--epochs", "1"]


def _error_line(capsys) -> str:
    """The one line a refusal leaves on stderr (and nothing on stdout)."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


def _user_folder(folder: Path, *names: str) -> Path:
    """A folder of the user's own files, cncnn never having run there."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"# the user's own {name}\n")
    (folder / "notes.txt").write_text("not cncnn's\n")
    return folder


@pytest.mark.parametrize("name", RUN_FILES)
def test_train_refuses_a_user_folder_holding_a_file_it_would_write(tmp_path, capsys, name):
    folder = _user_folder(tmp_path / "project", name)
    before = snapshot(folder)
    assert main(["train", "demo", "--work-dir", str(folder), *ONE_EPOCH]) == 2
    line = _error_line(capsys)
    assert name in line and str(folder) in line
    assert snapshot(folder) == before  # not even the lock file


def test_train_with_work_dir_dot_in_a_python_project_leaves_its_config_alone(tmp_path, capsys, monkeypatch):
    project = _user_folder(tmp_path / "project", CONFIG_FILE, "setup.py")
    before = snapshot(project)
    monkeypatch.chdir(project)
    assert main(["train", "demo", "--work-dir", ".", *ONE_EPOCH]) == 2
    assert CONFIG_FILE in _error_line(capsys)
    assert snapshot(project) == before


def test_a_dangling_link_named_like_a_run_file_is_the_users_too(tmp_path, capsys):
    folder = _user_folder(tmp_path / "project")
    os.symlink(tmp_path / "elsewhere" / "metrics.json", folder / "metrics.json")
    before = snapshot(folder)
    assert main(["train", "demo", "--work-dir", str(folder), *ONE_EPOCH]) == 2
    assert "metrics.json" in _error_line(capsys)
    assert snapshot(folder) == before and not (tmp_path / "elsewhere").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run, started in a folder of the user's that held only notes.txt."""
    folder = _user_folder(tmp_path_factory.mktemp("run") / "project")
    assert main(["train", "demo", "--work-dir", str(folder), *ONE_EPOCH]) == 0
    return folder


def test_a_run_in_a_user_folder_writes_only_its_own_files(trained):
    """The list of files the ownership check guards is the list a run writes (apart from its log folder)."""
    assert (trained / "notes.txt").read_text() == "not cncnn's\n"
    top = {path.name for path in trained.iterdir() if not path.is_dir()}
    assert top == {*RUN_FILES, LOCK_FILE, "notes.txt"}
    logs = [path for path in trained.iterdir() if path.is_dir()]
    assert len(logs) == 1 and (logs[0] / f"{logs[0].name}.log").is_file()  # the run's timestamped log folder


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


@pytest.mark.parametrize(("flags", "key"), [
    (["--backbone", "resnet34"], "model.backbone.type"),
    (["--cfg-options", "model.head.hidden=8"], "model.head.hidden"),
    (["--cfg-options", "optim_wrapper.optimizer.momentum=0.5"], "optim_wrapper.optimizer.momentum"),
])
def test_resume_refuses_another_model_or_optimizer_in_one_line(tmp_path, trained, capsys, flags, key):
    run = _copy(trained, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in RUN_FILES}
    assert main(["train", "demo", "--work-dir", str(run), *ONE_EPOCH, *flags, "--resume"]) == 2
    err = capsys.readouterr().err  # after the usual start-up notes: checked before the state loads
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and err.strip().endswith(errors[0])
    assert "Traceback" not in err and "missing keys" not in err.lower()
    assert {name: (run / name).read_bytes() for name in RUN_FILES} == before  # config.py, state, weights, metrics


def test_resume_keeps_the_config_the_run_started_with(tmp_path, trained, capsys):
    run = _copy(trained, tmp_path / "run")
    config = (run / CONFIG_FILE).read_bytes()
    assert main(["train", "demo", "--work-dir", str(run), *ONE_EPOCH, "--device", "cpu", "--resume"]) == 0
    assert (run / CONFIG_FILE).read_bytes() == config


@pytest.fixture()
def official(tmp_path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    torch.save(random_official_state("resnet18", channels=32, hidden=16, num_classes=5), folder / "w.pth")
    (folder / "classes.txt").write_text("\n".join(f"bird {i}" for i in range(5)) + "\n")
    return folder


def _another_name(path: Path, spelling: str) -> Path:
    """``path`` itself, spelled otherwise, or a link to it named otherwise."""
    if spelling == "same":
        return path
    if spelling == "dotted":
        return path.parent / "." / path.name
    link = path.with_name(f"{spelling}.pth")
    (link.symlink_to if spelling == "symlink" else link.hardlink_to)(path)
    return link


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_convert_refuses_to_write_over_its_source(official, capsys, spelling):
    src = official / "w.pth"
    dst = _another_name(src, spelling)
    before = snapshot(official)
    assert main(["convert", "official", str(src), str(dst), "--classes", str(official / "classes.txt")]) == 2
    assert "w.pth" in _error_line(capsys)
    assert snapshot(official) == before


def test_convert_refuses_to_write_over_its_classes_file(official, capsys):
    before = snapshot(official)
    classes = str(official / "classes.txt")
    assert main(["convert", "official", str(official / "w.pth"), classes, "--classes", classes]) == 2
    assert "classes.txt" in _error_line(capsys)
    assert snapshot(official) == before


def test_export_refuses_to_write_over_its_checkpoint(tmp_path, cncnn_checkpoint, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    checkpoint = shutil.copy(cncnn_checkpoint, folder / "model.safetensors")
    before = snapshot(folder)
    assert main(["export", str(checkpoint), str(checkpoint), "--format", "onnx", "--no-verify"]) == 2
    assert "model.safetensors" in _error_line(capsys)
    assert snapshot(folder) == before


def test_predict_out_refuses_a_file_it_was_given_to_read(tmp_path, cncnn_checkpoint, capsys):
    """``cncnn predict photos/* --out photos/preds.csv`` when an earlier preds.csv is among photos/*."""
    photos = tmp_path / "photos"
    fixtures.write_image(photos / "bird.jpg", 0, 0)
    (photos / "preds.csv").write_text("image,label_1\nmy,own\n")
    before = snapshot(photos)
    inputs = [str(path) for path in sorted(photos.iterdir())]
    assert main(["predict", *inputs, "--checkpoint", str(cncnn_checkpoint), "--device", "cpu",
                 "--out", str(photos / "preds.csv")]) == 2
    assert "preds.csv" in _error_line(capsys)
    assert snapshot(photos) == before


@pytest.mark.parametrize("where", [".", "test", "test/a"])
def test_eval_out_refuses_to_write_among_the_evaluated_images(tmp_path, cncnn_checkpoint, capsys, where):
    root = fixtures.make_imagefolder(tmp_path / "data", classes=("a", "b", "c", "d", "e"),
                                     counts={"train": 1, "test": 1})
    before = snapshot(root)
    assert main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(root),
                 "--workers", "0", "--device", "cpu", "--out", str(root / where)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--out" in errors[0] and "Traceback" not in captured.err
    assert "top1" in captured.out  # the results were shown before the reports were refused
    assert snapshot(root) == before
