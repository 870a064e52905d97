"""Plugin options of the wrong type or value: one line naming the part and the value, not a traceback."""
from __future__ import annotations

import pytest

from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.errors import CncnnError
from cncnn_cli.models.classifier import build_model
from tests.helpers.configs import tiny_model_config


@pytest.mark.parametrize("part,option,value,cause", [
    ("head", "hidden", "abc", "TypeError"),
    ("head", "hidden", -5, "negative dimension"),
    ("fusion", "channels", "abc", "TypeError"),
    ("attention", "reduction", 0, "ZeroDivisionError"),
])
def test_a_bad_model_option_names_the_part_and_the_value(part, option, value, cause):
    cfg = tiny_model_config()
    cfg[part] = dict(cfg[part], **{option: value})
    with pytest.raises(CncnnError, match=rf"{part} '.+' cannot be built from .*{option}={value!r}.*{cause}"):
        build_model(cfg)


def test_a_bad_dataset_option_names_the_dataset_and_the_value():
    with pytest.raises(CncnnError, match=r"dataset 'demo' cannot be read with train_per_class='abc'.*TypeError"):
        build_dataset("demo", "", "train", None, train_per_class="abc")
