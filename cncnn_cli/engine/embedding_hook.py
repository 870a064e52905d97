"""Retrieval during training (``retrieval=True``): each evaluated image's embedding, for the metric.

The embedding is read by forward hooks (:class:`EmbeddingCapture`) while validation runs its
usual forward pass, so Recall@K and MAP@R cost no second pass over the data. The capture is
attached for the evaluation only: training's forward passes never feed it.
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from cncnn_cli.evaluation.metrics import AccuracyMetric
from cncnn_cli.models.embedding import DEFAULT_EMBEDDING, EmbeddingCapture


@HOOKS.register_module()
class EmbeddingHook(Hook):
    """Attaches an :class:`EmbeddingCapture` to the model and to the accuracy metric for each
    validation and final test, and removes it when the evaluation has computed its figures."""

    def __init__(self, num_classes: int, kind: str = DEFAULT_EMBEDDING) -> None:
        self.num_classes, self.kind = num_classes, kind
        self._capture: EmbeddingCapture | None = None

    def before_val_epoch(self, runner) -> None:
        self._attach(runner, runner.val_evaluator)

    def before_test_epoch(self, runner) -> None:
        self._attach(runner, runner.test_evaluator)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._detach(runner.val_evaluator)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._detach(runner.test_evaluator)

    def _attach(self, runner, evaluator) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._capture = EmbeddingCapture(model, self.kind, self.num_classes)
        for metric in evaluator.metrics:
            if isinstance(metric, AccuracyMetric):
                metric.capture = self._capture

    def _detach(self, evaluator) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None
        for metric in evaluator.metrics:
            if isinstance(metric, AccuracyMetric):
                metric.capture = None
