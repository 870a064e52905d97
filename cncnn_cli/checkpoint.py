"""Deprecated: moved to ``cncnn_cli.weights.checkpoint``; this alias is removed in the next release."""
import warnings

from cncnn_cli.weights.checkpoint import Checkpoint, load_model, read_checkpoint, save_checkpoint  # noqa: F401

warnings.warn("cncnn_cli.checkpoint is deprecated; import from cncnn_cli.weights.checkpoint", DeprecationWarning, stacklevel=2)
