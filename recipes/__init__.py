"""Bundled recipes (mmengine config files); installed as package data so they resolve by name."""
