"""Water/land metrics on hand-counted confusion matrices; split-level accumulation and nodata handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rrsis.metrics import ConfusionMeter, confusion_counts

TARGET = np.array([1, 1, 0, 0, -1, 1])
PRED = np.array([1, 0, 1, 0, 1, 1])


def test_confusion_counts_rows_are_target() -> None:
    counts = confusion_counts(PRED, TARGET)
    # pixel 4 is nodata; TP = pixels 0 and 5, FN = 1, FP = 2, TN = 3
    assert counts.tolist() == [[1, 1], [1, 2]]


def test_metrics_hand_computed() -> None:
    meter = ConfusionMeter()
    meter.update(PRED, TARGET)
    m = meter.compute()
    tp, fn, fp, tn = 2, 1, 1, 1
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 4 / 6
    assert m["iou_water"] == pytest.approx(tp / (tp + fp + fn))  # 2 / 4 = 0.5
    assert m["iou_land"] == pytest.approx(tn / (tn + fn + fp))  # 1 / 3
    assert m["iou_mean"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert m["accuracy"] == pytest.approx((tp + tn) / 5)
    assert m["n_pixels"] == 5


def test_valid_mask_and_torch_inputs() -> None:
    valid = np.array([True, True, True, True, True, False])  # also drop pixel 5 (a TP)
    meter = ConfusionMeter()
    meter.update(torch.from_numpy(PRED), torch.from_numpy(TARGET), torch.from_numpy(valid))
    m = meter.compute()
    # TP 1, FN 1, FP 1, TN 1 over 4 pixels: IoU_water = 1 / 3, F1 = 2 / 4
    assert m["iou_water"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(0.5)
    assert m["n_pixels"] == 4


def test_split_level_accumulation_is_not_a_mean_of_batches() -> None:
    # batch 1: one water pixel, predicted right (IoU_water 1); batch 2: 3 water, 1 found (IoU_water 1/3)
    b1 = (np.array([[1, 0]]), np.array([[1, 0]]))
    b2 = (np.array([[1, 0, 0, 0]]), np.array([[1, 1, 1, 0]]))
    meter = ConfusionMeter()
    for pred, target in (b1, b2):
        meter.update(pred, target)
    # pooled: TP 2, FN 2, FP 0 -> 2 / 4 = 0.5, whereas the mean of per-batch values would be (1 + 1/3) / 2
    assert meter.compute()["iou_water"] == pytest.approx(0.5)
    a, b = ConfusionMeter(), ConfusionMeter()
    a.update(*b1)
    b.update(*b2)
    a.merge(b)
    assert a.counts.tolist() == meter.counts.tolist()


def test_undefined_metrics_are_nan_and_bad_classes_fail() -> None:
    meter = ConfusionMeter()
    meter.update(np.zeros((3, 3), int), np.zeros((3, 3), int))  # all land, nothing predicted as water
    m = meter.compute()
    assert math.isnan(m["iou_water"]) and math.isnan(m["f1"])
    assert m["iou_land"] == 1.0 and math.isnan(m["iou_mean"])
    with pytest.raises(ValueError, match="class outside"):
        confusion_counts(np.array([2]), np.array([1]))
    with pytest.raises(ValueError, match="pred has 2 pixels"):
        confusion_counts(np.array([1, 0]), np.array([1]))
