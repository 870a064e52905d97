"""Recipes and configs: bundled recipes by name or path, flags and `--cfg-options` merged, validated (pydantic), derived."""
