"""MBO (PSLG-SAM sec. 3.3): GrabCut from an eroded SAM mask, on a window around the box."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rrsis.refine.config import MboConfig
from rrsis.refine.mbo import BOX_OUTSIDE_IMAGE, NO_SURE_FOREGROUND, OK, initial_labels, mbo_refine, mbo_window


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def bright_object(samples: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """A real Landsat crop and one bright object in it: the 8-connected blob of mean(RGB) > 200 at
    (39, 39) in the crop (a cloud, 1,312 px, edges sharp: the same blob at thresholds 180 and 200)."""
    with rasterio.open(samples / "rasterio" / "RGB.byte.tif") as src:
        crop = src.read(window=Window(330, 100, 130, 140)).transpose(1, 2, 0).copy()
    _, comp = cv2.connectedComponents((crop.mean(axis=2) > 200).astype(np.uint8), connectivity=8)
    obj = comp == comp[60, 60]
    ys, xs = np.nonzero(obj)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert obj.sum() == 1312 and box == (39, 39, 89, 101)
    return crop, obj, box


def noisy_mask(obj: np.ndarray, box: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """What a coarse SAM mask looks like: 3 px too fat, with 10 % of the box's pixels flipped."""
    rng = np.random.default_rng(seed)
    fat = cv2.dilate(obj.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    x1, y1, x2, y2 = box
    flips = np.zeros_like(obj)
    flips[y1:y2, x1:x2] = rng.random((y2 - y1, x2 - x1)) < 0.10
    return fat ^ flips


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mbo_improves_iou_of_a_noisy_mask_on_a_real_crop(
    bright_object: tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]], seed: int
) -> None:
    crop, obj, box = bright_object
    noisy = noisy_mask(obj, box, seed)
    before = iou(noisy, obj)
    result = mbo_refine(crop, noisy, box, MboConfig())
    after = iou(result.mask, obj)
    assert result.reason == OK
    assert before < 0.6  # measured 0.53-0.55
    assert after > 0.85 and after > before + 0.25  # measured 0.88-0.91
    assert result.converged and 1 <= result.iterations <= MboConfig().max_iterations


def test_iteration_cap_holds(bright_object: tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]) -> None:
    crop, obj, box = bright_object
    noisy = noisy_mask(obj, box, 0)
    one = mbo_refine(crop, noisy, box, MboConfig(max_iterations=1, tol_frac=0.0))
    assert one.iterations == 1 and not one.converged  # the first round flips far more than 0 px
    many = mbo_refine(crop, noisy, box, MboConfig(max_iterations=3, tol_frac=0.0))
    assert many.iterations <= 3


def test_only_the_window_around_the_box_changes(
    bright_object: tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]],
) -> None:
    crop, obj, box = bright_object
    noisy = noisy_mask(obj, box, 0)
    noisy[130:, :10] = True  # a stray blob far from the box
    result = mbo_refine(crop, noisy, box, MboConfig(window_margin_px=4))
    # window = box grown by 4: x 35..93, y 35..105 (end-exclusive)
    assert result.window_xyxy == (35, 35, 93, 105)
    outside = np.ones_like(noisy)
    outside[35:105, 35:93] = False
    assert np.array_equal(result.mask[outside], noisy[outside])


def test_same_input_same_mask(bright_object: tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]) -> None:
    crop, obj, box = bright_object
    noisy = noisy_mask(obj, box, 1)
    first, second = mbo_refine(crop, noisy, box, MboConfig()), mbo_refine(crop, noisy, box, MboConfig())
    assert np.array_equal(first.mask, second.mask)


def test_trimap_eroded_core_is_sure_foreground_rest_of_box_probable_background() -> None:
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    labels = initial_labels(m, (3, 3, 17, 17), MboConfig(erode_kernel_px=3, erode_iterations=1))
    assert (labels[6:14, 6:14] == cv2.GC_FGD).all()  # 10x10 eroded by a 3x3 kernel -> 8x8
    assert labels[5, 5] == cv2.GC_PR_BGD  # eroded-away rim starts as background, as the paper says
    assert labels[3, 3] == cv2.GC_PR_BGD and labels[0, 0] == cv2.GC_BGD  # inside box / margin


def test_degenerate_inputs_return_the_mask_with_a_reason() -> None:
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8)
    empty = np.zeros((40, 40), bool)
    r = mbo_refine(img, empty, (5, 5, 20, 20), MboConfig())
    assert (r.reason, r.iterations) == (NO_SURE_FOREGROUND, 0) and not r.mask.any()
    m = np.zeros((40, 40), bool)
    m[10:20, 10:20] = True
    r = mbo_refine(img, m, (60, 60, 80, 80), MboConfig())
    assert r.reason == BOX_OUTSIDE_IMAGE and np.array_equal(r.mask, m)


def test_window_is_clipped_to_the_tile() -> None:
    assert mbo_window((2, 3, 30, 39), (40, 35), 5) == (0, 0, 35, 40)


def test_nodata_is_sure_background(bright_object: tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]) -> None:
    crop, obj, box = bright_object
    noisy = noisy_mask(obj, box, 0)
    valid = np.ones(obj.shape, bool)
    valid[:, :60] = False  # pretend the left part of the window is nodata
    r = mbo_refine(crop, noisy, box, MboConfig(), valid=valid)
    assert r.reason == OK and not r.mask[:, :60].any()
