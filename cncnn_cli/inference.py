"""Deprecated: moved to ``cncnn_cli.apis.inference``; this alias is removed in the next release."""
import warnings

from cncnn_cli.apis.inference import Predictor, Prediction  # noqa: F401

warnings.warn("cncnn_cli.inference is deprecated; import from cncnn_cli.apis.inference", DeprecationWarning, stacklevel=2)
