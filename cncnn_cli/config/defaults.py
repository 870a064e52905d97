"""Defaults that both the config schema and command-line options need, importable without torch."""

#: Data loader processes unless a recipe or --workers says otherwise.
DEFAULT_WORKERS = 4
