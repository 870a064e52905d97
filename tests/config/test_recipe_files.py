"""A recipe file that does not parse: its own path and line, not mmengine's temporary copy."""
from __future__ import annotations

import pytest

from cncnn_cli.config.recipes import load_recipe
from cncnn_cli.errors import CncnnError


def test_a_syntax_error_names_the_recipe_and_the_line(tmp_path):
    recipe = tmp_path / "broken.py"
    recipe.write_text("batch_size = 16\nmodel = dict(\n    type='CNCNN',\n")
    with pytest.raises(CncnnError, match=rf"recipe {recipe}:2: syntax error: '\(' was never closed"):
        load_recipe(recipe)


def test_a_bad_override_blames_the_option_and_names_the_field_not_pydantics_union_member():
    from cncnn_cli.config.resolve import resolve_config

    with pytest.raises(CncnnError) as caught:
        resolve_config("demo", {}, ["preprocess.crop=abc"])
    message = str(caught.value)
    assert message.startswith("preprocess.crop: Input should be a valid integer")
    assert "(--cfg-options preprocess.crop)" in message and "recipe" not in message and ".int" not in message
    with pytest.raises(CncnnError, match=r"Valid: num_classes, backbone, fusion, attention, head$"):
        resolve_config("demo", {}, ["model.bakbone=3"])


@pytest.mark.parametrize("option, named", [("preprocess.std=[58.4,0,57.4]", "preprocess.std.1"),
                                           ("preprocess.std=[58.4,-57.1,57.4]", "preprocess.std.1"),
                                           ("preprocess.crop=0", "preprocess.crop")])
def test_a_preprocessing_that_would_divide_by_zero_or_crop_nothing_is_refused_before_training(option, named):
    """A std of 0 used to train into a non-finite loss, blamed on the learning rate."""
    from cncnn_cli.config.resolve import resolve_config

    with pytest.raises(CncnnError) as caught:
        resolve_config("demo", {}, [option])
    assert str(caught.value).startswith(named) and f"(--cfg-options {option.split('=')[0]})" in str(caught.value)
