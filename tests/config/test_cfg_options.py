"""`--cfg-options` reads values as mmengine's DictAction does, and takes several pairs after one flag."""
from __future__ import annotations

import argparse

import pytest
from mmengine.config import DictAction

from cncnn_cli.cli.main import expand_cfg_options
from cncnn_cli.config.resolve import parse_cfg_options, resolve_config
from cncnn_cli.errors import CncnnError

DICT_ACTION_VALUES = ["1,2", "[1,2]", "[a, b]", "(1,2)", "[(1,2),(3,4)]", "true", "False", "None", "none",
                      "1e-3", "-1", "abc", "[]", "0.5,x"]


def _dict_action(value: str):
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    return parser.parse_args(["--cfg-options", f"key={value}"]).cfg_options["key"]


@pytest.mark.parametrize("value", DICT_ACTION_VALUES)
def test_values_parse_as_mmengine_dict_action_parses_them(value):
    parsed = parse_cfg_options([f"key={value}"])["key"]
    assert parsed == _dict_action(value) and type(parsed) is type(_dict_action(value))


def test_dicts_and_quoted_strings_are_python_literals():
    parsed = parse_cfg_options(["custom_hooks=[{'type': 'X', 'n': 1}]", "work_dir='my runs'"])
    assert parsed == {"custom_hooks": [{"type": "X", "n": 1}], "work_dir": "my runs"}


def test_a_pair_without_equals_or_with_unbalanced_brackets_is_a_clear_error():
    with pytest.raises(CncnnError, match="expected key=value"):
        parse_cfg_options(["train_cfg.max_epochs"])
    with pytest.raises(CncnnError, match="unbalanced brackets"):
        parse_cfg_options(["a=[1,2"])


def test_several_pairs_after_one_flag_become_one_flag_each():
    argv = ["train", "demo", "--cfg-options", "a=1", "b=[1,2]", "--epochs", "1", "--cfg-options=c=3", "d=4"]
    assert expand_cfg_options(argv) == ["train", "demo", "--cfg-options", "a=1", "--cfg-options", "b=[1,2]",
                                        "--epochs", "1", "--cfg-options=c=3", "--cfg-options", "d=4"]
    assert expand_cfg_options(["train", "--cfg-options", "a=1", "demo"]) == ["train", "--cfg-options", "a=1", "demo"]


def test_a_list_value_reaches_the_resolved_config():
    cfg = resolve_config("demo", cfg_options=["preprocess.resize=40,40", "preprocess.crop=32"])
    assert list(cfg.preprocess["resize"]) == [40, 40] and cfg.preprocess["crop"] == 32
