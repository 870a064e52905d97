"""Accuracy: the metric validation uses, and `cncnn eval` on a checkpoint."""
