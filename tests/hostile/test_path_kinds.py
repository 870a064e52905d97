"""Paths of the wrong kind: a file where a folder is expected, a folder where a file is, for the path
options of every command. Each is one line naming the option and the path, exit 2, and nothing on
disk changes.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cncnn_cli.cli.main import main
from tests.helpers.configs import TINY
from tests.helpers.datasets import write_image
from tests.helpers.files import snapshot

#: (case, argv) with FILE the user's file, FILE/sub a folder under it, WORK a fresh folder.
FILE_FOR_A_FOLDER = [
    ("train --work-dir", ["train", "demo", "--work-dir", "FILE", *TINY]),
    ("train --work-dir under a file", ["train", "demo", "--work-dir", "FILE/sub", *TINY]),
    ("the recipe's work_dir", ["train", "demo", *TINY, "--cfg-options", "work_dir=FILE"]),
    ("ablate --work-dir", ["ablate", "demo", "--work-dir", "FILE", *TINY]),
    ("train --data-root", ["train", "demo", "--work-dir", "WORK", "--data-root", "FILE", *TINY]),
    ("data download --root", ["data", "download", "cub", "--root", "FILE"]),
    ("data download --root under a file", ["data", "download", "cub", "--root", "FILE/sub"]),
    ("eval --out", ["eval", "CHECKPOINT", "--out", "FILE"]),
    ("eval --data-root", ["eval", "CHECKPOINT", "--data-root", "FILE"]),
    ("visualize --out", ["visualize", "IMAGE", "--checkpoint", "CHECKPOINT", "--out", "FILE"]),
    ("data check --data-root", ["data", "check", "--dataset", "cub", "--data-root", "FILE"]),
    ("embed --data-root", ["embed", "--dataset", "demo", "--data-root", "FILE", "--checkpoint", "CHECKPOINT",
                           "--out", "WORK/e.npy"]),
    ("gallery build ROOT", ["gallery", "build", "FILE", "--out", "WORK/g.safetensors", "--checkpoint", "CHECKPOINT"]),
]
#: (case, argv, the option as the message names it) with FOLDER an existing folder of the user's.
FOLDER_FOR_A_FILE = [
    ("convert SRC", ["convert", "official", "FOLDER", "WORK/x.safetensors"], "SRC"),
    ("convert DST", ["convert", "official", "FILE", "FOLDER"], "DST"),
    ("convert --classes", ["convert", "official", "FILE", "WORK/x.safetensors", "--classes", "FOLDER"],
     "--classes"),
    ("export CHECKPOINT", ["export", "FOLDER", "WORK/x.onnx"], "CHECKPOINT"),
    ("export OUT", ["export", "CHECKPOINT", "FOLDER"], "OUT"),
    ("--plugin", ["plugins", "--plugin", "FOLDER"], "--plugin"),
    ("data verify FILES", ["data", "verify", "cars", "FOLDER"], "FILES"),
    ("embed --out", ["embed", "IMAGE", "--checkpoint", "CHECKPOINT", "--out", "FOLDER"], "--out"),
    ("calibrate --out", ["calibrate", "CHECKPOINT", "--out", "FOLDER", "--val-split", "val"], "--out"),
    ("gallery build --out", ["gallery", "build", "WORK", "--out", "FOLDER", "--checkpoint", "CHECKPOINT"], "--out"),
    ("predict --gallery", ["predict", "IMAGE", "--checkpoint", "CHECKPOINT", "--gallery", "FOLDER"], "--gallery"),
]
# predict --out, and the checkpoint of predict, eval and visualize, were already refused this way
# (tests/cli/test_predict_faults.py)


@pytest.fixture()
def places(tmp_path, cncnn_checkpoint) -> dict[str, str]:
    """The user's folder: a file and a folder named like the file an option expects."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "weights.txt").write_text("the user's file\n")
    (user / "model.onnx").mkdir()
    write_image(user / "bird.png", 0, 1)
    return {"FILE": str(user / "weights.txt"), "FOLDER": str(user / "model.onnx"), "WORK": str(tmp_path / "work"),
            "CHECKPOINT": str(cncnn_checkpoint), "IMAGE": str(user / "bird.png")}


def _fill(argv: list[str], places: dict[str, str]) -> list[str]:
    """The placeholders (FILE, FOLDER, ...) replaced by their paths, in one pass."""
    pattern = re.compile("|".join(places))
    return [pattern.sub(lambda match: places[match.group()], arg) for arg in argv]


def _refused(argv: list[str], tmp_path: Path, capsys) -> str:
    """Run ``argv``; expect exit 2, one ``error:`` line (the last), no traceback, nothing written."""
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    assert snapshot(tmp_path) == before
    return errors[0]


@pytest.mark.parametrize(("case", "argv"), FILE_FOR_A_FOLDER, ids=[case for case, _ in FILE_FOR_A_FOLDER])
def test_a_file_where_a_folder_is_expected(tmp_path, places, capsys, case, argv):
    line = _refused(_fill(argv, places), tmp_path, capsys)
    assert "expected a folder, but" in line and f"{places['FILE']}" in line


@pytest.mark.parametrize(("case", "argv", "option"), FOLDER_FOR_A_FILE, ids=[case for case, *_ in FOLDER_FOR_A_FILE])
def test_a_folder_where_a_file_is_expected(tmp_path, places, capsys, case, argv, option):
    line = _refused(_fill(argv, places), tmp_path, capsys)
    assert f"{option} {places['FOLDER']}: expected a file, but it is a folder" in line


def test_the_option_names_its_own_path_among_several(tmp_path, places, capsys):
    """``--plugin`` is repeatable: the one that is a folder is named, after a good one."""
    plugin = tmp_path / "good_plugin.py"
    plugin.write_text("")
    line = _refused(["plugins", "--plugin", str(plugin), "--plugin", places["FOLDER"]], tmp_path, capsys)
    assert line == f"error: --plugin {places['FOLDER']}: expected a file, but it is a folder; name a file"


#: Path parameters whose kind is checked where they are read, with the reason.
CHECKED_WHERE_READ = {
    "inputs": "images or folders, each walked or named: an odd entry gets its own error entry",
    "checkpoint": "a folder gets the weights files it holds as a hint (weights/checkpoint.py)",
    "curves": "a work dir or its metrics.json",
    "images": "export --images: images or folders",
    "calibration": "export --calibration: images or folders",
}


def _commands(app, prefix=""):
    for command in app.registered_commands:
        yield prefix + (command.name or command.callback.__name__), command.callback
    for group in app.registered_groups:
        yield from _commands(group.typer_instance, f"{prefix}{group.name} ")


def test_every_path_parameter_of_every_command_declares_its_kind():
    """A new path option must say whether it names a file or a folder (or be listed above with why)."""
    import inspect
    import typing

    import typer

    from cncnn_cli.cli.common import file_path, folder_path
    from cncnn_cli.cli.main import app

    undeclared = []
    for name, function in _commands(app):
        hints = typing.get_type_hints(function, include_extras=True)
        for parameter, declared in inspect.signature(function).parameters.items():
            hint = hints.get(parameter)
            if "Path" not in str(hint) and parameter != "data_root":
                continue
            infos = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, typer.models.ParameterInfo)]
            if isinstance(declared.default, typer.models.ParameterInfo):
                infos.append(declared.default)
            if not any(info.callback in (file_path, folder_path) for info in infos) and \
                    parameter not in CHECKED_WHERE_READ:
                undeclared.append(f"{name} {parameter}")
    assert undeclared == []
