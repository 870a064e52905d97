"""Whole models: the CN-CNN assembled from registered parts, the data preprocessor, the ablation variants.

Importing this package registers the core models (``CNCNN``) in ``cncnn_cli.registry.MODELS``.
"""
from cncnn_cli.models.classifier import CNCNN, Classifier, CncnnDataPreprocessor, build_model  # noqa: F401
