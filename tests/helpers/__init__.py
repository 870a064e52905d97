"""Test helpers (not tests): small configs, datasets in the published layouts, the plain-formula reference, plugins loaded with --plugin."""
