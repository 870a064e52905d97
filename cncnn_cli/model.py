"""Deprecated: moved to ``cncnn_cli.models.classifier``; this alias is removed in the next release."""
import warnings

from cncnn_cli.models.classifier import CNCNN, Classifier, CncnnDataPreprocessor, build_model  # noqa: F401

warnings.warn("cncnn_cli.model is deprecated; import from cncnn_cli.models.classifier", DeprecationWarning, stacklevel=2)
