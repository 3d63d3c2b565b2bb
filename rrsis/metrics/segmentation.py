"""Water/land metrics from confusion counts accumulated over a whole split (never averaged per batch).

Class 1 is water in rrsis data (Sen1Floods11: 0 land, 1 water; the paper writes land = 1 for eq. 4-5, which
does not change these metrics). F1 is the water F1; IoU_mean is the mean of IoU_water and IoU_land. Pixels
whose target equals `ignore_index` (-1 = nodata) or where `valid` is False are not counted. A metric whose
denominator is zero (e.g. IoU_water on a split without water, predicted or true) is NaN, never a silent 0 or 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WATER, LAND = 1, 0


def _as_numpy(a: Any) -> np.ndarray:
    """numpy view of a numpy array or a torch tensor (moved to CPU), without importing torch here."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def confusion_counts(
    pred: Any, target: Any, valid: Any = None, num_classes: int = 2, ignore_index: int = -1
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = target class, columns = predicted class."""
    p = _as_numpy(pred).astype(np.int64, copy=False).ravel()
    t = _as_numpy(target).astype(np.int64, copy=False).ravel()
    if p.shape != t.shape:
        raise ValueError(f"confusion_counts: pred has {p.size} pixels, target has {t.size}")
    keep = t != ignore_index
    if valid is not None:
        v = _as_numpy(valid).astype(bool, copy=False).ravel()
        if v.shape != t.shape:
            raise ValueError(f"confusion_counts: valid has {v.size} pixels, target has {t.size}")
        keep &= v
    p, t = p[keep], t[keep]
    for name, arr in (("target", t), ("pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"confusion_counts: {name} has a class outside [0, {num_classes}) after ignoring nodata")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def metrics_from_counts(counts: np.ndarray) -> dict[str, float]:
    """F1 (water), IoU_water, IoU_land, IoU_mean, accuracy and the number of counted pixels."""
    tp = float(counts[WATER, WATER])
    fp = float(counts[LAND, WATER])
    fn = float(counts[WATER, LAND])
    tn = float(counts[LAND, LAND])
    total = float(counts.sum())
    iou_water = _ratio(tp, tp + fp + fn)
    iou_land = _ratio(tn, tn + fn + fp)
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou_water": iou_water,
        "iou_land": iou_land,
        "iou_mean": (iou_water + iou_land) / 2,
        "accuracy": _ratio(tp + tn, total),
        "n_pixels": total,
    }


class ConfusionMeter:
    """Accumulates confusion counts batch by batch (exact for any number of tiles); `compute()` at the end."""

    def __init__(self, num_classes: int = 2, ignore_index: int = -1) -> None:
        if num_classes != 2:
            raise ValueError(f"ConfusionMeter: the water/land metrics need num_classes=2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any, valid: Any = None) -> None:
        self.counts += confusion_counts(pred, target, valid, self.num_classes, self.ignore_index)

    def merge(self, other: ConfusionMeter) -> None:
        """Add another meter's counts (e.g. from another worker or shard)."""
        self.counts += other.counts

    def reset(self) -> None:
        self.counts[:] = 0

    def compute(self) -> dict[str, float]:
        return metrics_from_counts(self.counts)
