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
