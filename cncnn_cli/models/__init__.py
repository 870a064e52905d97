"""Whole models: the CN-CNN assembled from registered parts, the data preprocessor, the ablation variants.

The names below load on first use (PEP 562), so ``cncnn_cli.models.variants`` stays importable
without torch; ``cncnn_cli.models.classifier`` registers ``CNCNN`` in ``cncnn_cli.registry.MODELS``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CNCNN", "Classifier", "CncnnDataPreprocessor", "build_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cncnn_cli.models import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'cncnn_cli.models' has no attribute {name!r}")
