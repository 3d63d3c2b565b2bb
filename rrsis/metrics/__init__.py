"""Metrics (pure numpy; accept torch tensors too). Water/land: `ConfusionMeter`, `confusion_counts`."""

from rrsis.metrics.segmentation import ConfusionMeter, confusion_counts, metrics_from_counts

__all__ = ["ConfusionMeter", "confusion_counts", "metrics_from_counts"]
