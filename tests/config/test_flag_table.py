"""The training flags are declared once (cncnn_cli/config/flags.py): the options of `cncnn train` and
`cncnn ablate`, where each value lands and which flag an error blames all come from that table."""
from __future__ import annotations

import pytest
import typer

from cncnn_cli.cli.main import app
from cncnn_cli.config.flags import FLAGS, FLAG_BY_NAME
from cncnn_cli.config.recipes import load_recipe
from cncnn_cli.config.resolve import apply_flags, resolve_config
from cncnn_cli.errors import CncnnError

#: A value for each flag that puts its value at its key unchanged.
SAMPLES = {"epochs": 3, "batch_size": 4, "lr": 0.02, "device": "cpu", "seed": 7, "workers": 0, "launcher": "none",
           "val_fraction": 0.2, "val_split": "val", "accumulate": 2, "effective_batch": 32, "sync_bn": True,
           "amp": True, "compile": True, "gpu_decode": True, "retrieval": True, "fp32_precision": "highest", "work_dir": "runs/x"}


def _options(command: str) -> dict[str, str]:
    params = typer.main.get_command(app).commands[command].params
    return {max(param.opts, key=len): param.help for param in params if param.param_type_name == "option"}


@pytest.mark.parametrize("command, without", [("train", set()), ("ablate", {"work_dir"})])
def test_train_and_ablate_offer_every_flag_of_the_table_with_its_help(command, without):
    options = _options(command)
    for flag in FLAGS:
        if flag.name not in without:
            assert options.get(flag.option) == flag.help, flag.option
    assert options["--cfg-options"] and options["--plugin"]


def _at(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_flag_lands_at_the_key_the_table_names(name):
    flag = FLAG_BY_NAME[name]
    value = SAMPLES[name]
    cfg = load_recipe("demo")
    apply_flags(cfg, {name: value})
    assert _at(cfg, flag.key) == value


@pytest.mark.parametrize("first, second", [(f.name, f.either) for f in FLAGS if f.either])
def test_two_flags_that_choose_one_thing_two_ways_are_refused(first, second):
    both = {first: SAMPLES.get(first, True), second: SAMPLES.get(second, True)}
    with pytest.raises(CncnnError, match=r"give either --[a-z-]+ or --[a-z-]+, not both"):
        resolve_config("demo", both)


def test_a_folder_flag_is_held_as_a_string(tmp_path):
    cfg = resolve_config("demo", {"work_dir": tmp_path / "run", "data_root": tmp_path})
    assert cfg.work_dir == str(tmp_path / "run") and cfg.dataset["data_root"] == str(tmp_path)
