"""RRSIS metrics against hand-computed cases (LAVT/RMSIN conventions)."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis.metrics.referring import ReferringMeter, box_iou, iou_from_iu, mask_iu


def _mask(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def test_perfect_prediction() -> None:
    gt = _mask((8, 8), slice(2, 6), slice(2, 6))
    meter = ReferringMeter()
    meter.add("a", "car", gt.copy(), gt)
    s = meter.summary()
    assert s["miou"] == 1.0 and s["oiou"] == 1.0
    assert all(s[f"pr@{t}"] == 1.0 for t in ("0.5", "0.6", "0.7", "0.8", "0.9"))


def test_empty_prediction_scores_zero() -> None:
    gt = _mask((8, 8), slice(0, 2), slice(0, 2))  # 4 px
    i, u = mask_iu(np.zeros_like(gt), gt)
    assert (i, u) == (0, 4)  # I = 0, U = 4 -> IoU 0
    meter = ReferringMeter()
    meter.add("a", "car", np.zeros_like(gt), gt)
    s = meter.summary()
    assert s["miou"] == 0.0 and s["oiou"] == 0.0 and s["pr@0.5"] == 0.0


def test_empty_ground_truth() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    pred = _mask((4, 4), slice(0, 1), slice(0, 3))  # 3 px predicted on an empty target
    assert mask_iu(pred, empty) == (0, 3)
    # both empty: U = 0 -> IoU 0 (LAVT's convention), and nothing is added to the cumulative union
    assert mask_iu(empty, empty) == (0, 0)
    assert iou_from_iu(0, 0) == 0.0
    meter = ReferringMeter()
    meter.add("a", "", pred, empty)
    meter.add("b", "", empty, empty)
    s = meter.summary()
    assert s["miou"] == 0.0 and s["cum_union_px"] == 3 and s["oiou"] == 0.0


def test_two_samples_where_miou_differs_from_oiou() -> None:
    # sample 1: gt 2x2 = 4 px, pred covers it exactly -> I = 4, U = 4, IoU = 1
    gt1 = _mask((10, 10), slice(0, 2), slice(0, 2))
    # sample 2: gt 10x10 = 100 px, pred top half 5x10 = 50 px -> I = 50, U = 100, IoU = 0.5
    gt2 = np.ones((10, 10), dtype=bool)
    pred2 = _mask((10, 10), slice(0, 5), slice(0, 10))
    meter = ReferringMeter()
    meter.add("s1", "car", gt1.copy(), gt1)
    meter.add("s2", "field", pred2, gt2)
    s = meter.summary()
    assert s["miou"] == pytest.approx((1.0 + 0.5) / 2)  # 0.75
    assert s["oiou"] == pytest.approx((4 + 50) / (4 + 100))  # 54 / 104 = 0.5192...
    assert s["pr@0.5"] == 1.0  # 0.5 >= 0.5 counts (LAVT uses >=)
    assert s["pr@0.6"] == 0.5 and s["pr@0.9"] == 0.5
    assert s["per_category"]["car"]["miou"] == 1.0
    assert s["per_category"]["field"]["oiou"] == 0.5
    assert s["category_miou"] == pytest.approx(0.75)


def test_box_iou_and_accuracy() -> None:
    # a = [0,0,4,4] area 16, b = [2,2,6,6] area 16, overlap 2x2 = 4 -> IoU 4 / (16 + 16 - 4) = 1/7
    assert box_iou(np.array([0, 0, 4, 4]), np.array([2, 2, 6, 6]))[0] == pytest.approx(1 / 7)
    assert box_iou(np.array([0, 0, 1, 1]), np.array([5, 5, 6, 6]))[0] == 0.0
    assert box_iou(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))[0] == 0.0  # degenerate
    meter = ReferringMeter()
    meter.add("a", pred_box=np.array([0, 0, 4, 4]), gt_box=np.array([0, 0, 4, 4]))  # 1.0
    meter.add("b", pred_box=np.array([0, 0, 4, 4]), gt_box=np.array([2, 2, 6, 6]))  # 1/7
    s = meter.summary()
    assert s["box_acc@0.5"] == 0.5
    assert s["box_miou"] == pytest.approx((1 + 1 / 7) / 2)
    assert "miou" not in s  # no masks given


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        mask_iu(np.zeros((2, 2)), np.zeros((3, 3)))
