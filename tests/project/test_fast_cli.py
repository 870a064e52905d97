"""`cncnn --help`, `cncnn recipes` and completion answer at once: nothing heavy is imported for them.

Shell completion runs the program at every Tab, so these paths must not import torch,
torchvision, mmengine or matplotlib (about 3 s and 800 MiB); commands import them inside.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "mmengine", "matplotlib", "numpy", "PIL", "onnx", "timm")
PROBE = """
import json, sys
from cncnn_cli.cli.main import main
code = main({argv!r})
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


@pytest.mark.parametrize("argv", [["--help"], ["recipes"], ["train", "--help"], ["predict", "--help"],
                                  ["data", "--help"], ["--version"]])
def test_light_commands_import_nothing_heavy(argv):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": []}


def test_completion_of_a_command_name_answers_without_torch():
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=[], heavy=HEAVY)], capture_output=True, text=True, check=True,
        env={**os.environ, "_CNCNN_COMPLETE": "complete_bash", "COMP_WORDS": "cncnn pre", "COMP_CWORD": "1"})
    lines = done.stdout.strip().splitlines()
    assert "predict" in done.stdout and json.loads(lines[-1])["heavy"] == []


def test_completion_of_recipe_names():
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=[], heavy=HEAVY)], capture_output=True, text=True, check=True,
        env={**os.environ, "_CNCNN_COMPLETE": "complete_bash", "COMP_WORDS": "cncnn train c", "COMP_CWORD": "2"})
    lines = done.stdout.strip().splitlines()
    assert {"cub", "cars"} <= set(lines[:-1]) and "demo" not in lines and json.loads(lines[-1])["heavy"] == []
