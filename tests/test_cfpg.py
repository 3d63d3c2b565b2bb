"""CFPG (PSLG-SAM eq. 4-9): each step on its own, then whole boxes with exact points or exact reasons."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis.refine.cfpg import (
    BOX_OUTSIDE_IMAGE,
    OK,
    ROI_NODATA,
    ROI_TOO_SMALL,
    UNIFORM_ROI,
    Region,
    area_threshold,
    cfpg_point,
    cfpg_points,
    cluster_binary,
    convexity,
    crop_roi,
    distance_map,
    open_close,
    regions_of,
    roi_bounds,
    select_region,
    watershed_labels,
)
from rrsis.refine.config import CfpgConfig

CFG = CfpgConfig()


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A dark, noisy background (values 30..89 per channel) standing in for ground texture."""
    return np.random.default_rng(seed).integers(30, 90, (h, w, 3)).astype(np.uint8)


def disk(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


# ---- eq. 4: crop -------------------------------------------------------------------------------


def test_roi_bounds_floor_ceil_and_clip() -> None:
    # x1 = floor(2.4) = 2, y1 = floor(1.6) = 1, x2 = ceil(5.2) = 6, y2 = ceil(4.0) = 4
    assert roi_bounds((2.4, 1.6, 5.2, 4.0), 8, 10) == (2, 1, 6, 4)
    # a box across the top-left image corner keeps its inside part
    assert roi_bounds((-3, -2, 4, 5), 8, 10) == (0, 0, 4, 5)
    # entirely right of a 10-wide image: empty
    b = roi_bounds((12, 1, 20, 5), 8, 10)
    assert b[2] - b[0] == 0
    assert roi_bounds((np.nan, 0, 3, 3), 8, 10) == (0, 0, 0, 0)


def test_crop_roi_is_the_eq4_slice() -> None:
    img = np.arange(8 * 10 * 3, dtype=np.uint8).reshape(8, 10, 3)
    roi = crop_roi(img, (2, 1, 6, 4))
    assert roi.shape == (3, 4, 3)  # (y2 - y1, x2 - x1) = (4 - 1, 6 - 2)
    assert np.array_equal(roi, img[1:4, 2:6])


# ---- eq. 5: KMeans++ k=2 -> binary map ----------------------------------------------------------


@pytest.mark.parametrize("obj, bg", [(200, 20), (20, 200)])
def test_cluster_binary_marks_the_object_not_the_frame(obj: int, bg: int) -> None:
    roi = np.full((12, 12, 3), bg, np.uint8)
    roi[4:8, 3:9] = obj  # the cluster touching fewer border pixels is the object, bright or dark
    binary = cluster_binary(roi, CFG)
    expected = np.zeros((12, 12), np.uint8)
    expected[4:8, 3:9] = 1
    assert np.array_equal(binary, expected)


def test_cluster_binary_on_subsample_labels_every_pixel() -> None:
    roi = textured(100, 100)
    roi[disk(100, 100, 50, 50, 20)] = 230
    binary = cluster_binary(roi, CfpgConfig(kmeans_max_pixels=256))  # fit on 256 of 10,000 pixels
    assert np.array_equal(binary.astype(bool), disk(100, 100, 50, 50, 20))


# ---- morphology ---------------------------------------------------------------------------------


def test_opening_removes_specks_and_closing_bridges_gaps() -> None:
    b = np.zeros((20, 20), np.uint8)
    b[5:15, 5:15] = 1
    b[9, 5:15] = 0  # a one-pixel crack through the square
    b[1, 1] = 1  # a speck
    out = open_close(b, CfpgConfig(open_kernel_px=3, close_kernel_px=3))
    assert out[1, 1] == 0
    assert out[9, 7:13].all()


# ---- eq. 6: distance transform ------------------------------------------------------------------


def test_distance_map_is_distance_to_nearest_background() -> None:
    b = np.zeros((9, 9), np.uint8)
    b[2:7, 2:7] = 1  # 5x5 square; its centre (4, 4) is 3 px from row/col 1 and 7
    d = distance_map(b, CfpgConfig(dist_mask_px=0))
    assert d[4, 4] == pytest.approx(3.0)
    assert d[2, 4] == pytest.approx(1.0)
    assert d[0, 0] == 0.0


def test_distance_map_does_not_treat_the_roi_edge_as_background() -> None:
    b = np.ones((5, 9), np.uint8)
    b[:, 0] = 0  # the only background is column 0, so column c is c px away
    d = distance_map(b, CfpgConfig(dist_mask_px=0))
    assert d[2, 8] == pytest.approx(8.0)


# ---- markers + watershed ------------------------------------------------------------------------


def test_watershed_splits_two_touching_disks() -> None:
    h, w = 40, 70
    both = disk(h, w, 20, 20, 12) | disk(h, w, 45, 20, 12)  # overlap by a thin neck
    roi = np.where(both[..., None], 220, 30).astype(np.uint8).repeat(3, axis=2)[..., :3]
    binary = both.astype(np.uint8)
    labels = watershed_labels(roi, binary, distance_map(binary, CFG), CFG)
    assert labels is not None
    assert labels[20, 20] >= 2 and labels[20, 45] >= 2 and labels[20, 20] != labels[20, 45]
    assert labels[2, 2] == 1  # background marker
    assert len(regions_of(labels)) == 2


def test_watershed_without_foreground_has_no_marker() -> None:
    binary = np.zeros((10, 10), np.uint8)
    assert watershed_labels(np.zeros((10, 10, 3), np.uint8), binary, distance_map(binary, CFG), CFG) is None


# ---- eq. 7: convexity ---------------------------------------------------------------------------


def test_convexity_of_a_rectangle_is_one() -> None:
    r = np.zeros((10, 10), bool)
    r[2:5, 3:9] = True
    assert convexity(r) == pytest.approx(1.0)


def test_convexity_of_an_l_tromino() -> None:
    # three unit squares (0,0), (1,0), (0,1): hull = the 2x2 square minus the half-square corner,
    # area 4 - 0.5 = 3.5, so kappa = 3 / 3.5 = 6/7
    r = np.zeros((4, 4), bool)
    r[0, 0] = r[0, 1] = r[1, 0] = True
    assert convexity(r) == pytest.approx(6 / 7)


def test_convexity_counts_holes_against_the_region() -> None:
    r = np.zeros((10, 10), bool)
    r[1:9, 1:9] = True
    r[3:7, 3:7] = False  # a 4x4 hole in an 8x8 square: (64 - 16) / 64
    assert convexity(r) == pytest.approx(48 / 64)


# ---- eq. 8: area filter + argmax kappa ----------------------------------------------------------


def test_select_region_filters_area_strictly_then_takes_max_kappa() -> None:
    regions = [
        Region(1, 10, 1.00, (0.0, 0.0)),  # most convex but area 10 is not > 10
        Region(2, 50, 0.60, (1.0, 1.0)),
        Region(3, 30, 0.90, (2.0, 2.0)),
        Region(4, 40, 0.90, (3.0, 3.0)),  # ties with 3 on kappa: the larger wins
    ]
    assert select_region(regions, 10.0) == regions[3]
    assert select_region(regions, 50.0) is None


def test_area_threshold_is_the_larger_of_pixels_and_fraction() -> None:
    assert area_threshold(400, CfpgConfig(min_area_px=9, min_area_frac=0.01)) == 9.0  # 0.01 * 400 = 4 < 9
    assert area_threshold(10000, CfpgConfig(min_area_px=9, min_area_frac=0.01)) == 100.0  # 0.01 * 10000


# ---- eq. 9: centroid ----------------------------------------------------------------------------


def test_region_centroid_is_the_mean_pixel_index() -> None:
    labels = np.ones((6, 8), np.int32)
    labels[1:4, 4:6] = 2  # columns 4, 5 -> mean x 4.5; rows 1, 2, 3 -> mean y 2.0
    (region,) = regions_of(labels)
    assert region.centroid_xy == (4.5, 2.0)
    assert region.area_px == 6


# ---- whole boxes --------------------------------------------------------------------------------


def test_convex_bright_object_on_textured_background_gives_its_centre() -> None:
    img = textured(120, 120)
    img[disk(120, 120, 60, 50, 15)] = (220, 200, 180)
    r = cfpg_point(img, (30, 20, 91, 81), CFG)
    # the disk is symmetric about (60, 50), so the mean of its pixel indices is exactly that
    assert r.reason == OK
    assert r.point == (60.0, 50.0)
    assert r.roi_xyxy == (30, 20, 91, 81)


def test_two_objects_pick_the_more_convex_one() -> None:
    img = textured(100, 140, seed=1)
    img[disk(100, 140, 40, 50, 14)] = 230  # convex disk
    ring = disk(100, 140, 100, 50, 28) & ~disk(100, 140, 100, 50, 10)  # 18 px thick: it gets a marker too
    ring &= ~((np.mgrid[:100, :140][1] > 100) & (np.abs(np.mgrid[:100, :140][0] - 50) < 6))  # open a C
    img[ring] = 230  # a C-shaped object: big but concave
    r = cfpg_point(img, (10, 15, 130, 85), CFG)
    assert r.reason == OK
    assert r.point == (40.0, 50.0)  # the disk's centre, not the C's
    assert r.n_regions == 2
    assert r.kappa is not None and r.kappa > 0.9


def test_uniform_roi_has_no_point() -> None:
    img = np.full((50, 50, 3), 100, np.uint8)
    img[0, 0] = 101  # a one-level wiggle is still uniform (std << 2)
    r = cfpg_point(img, (0, 0, 50, 50), CFG)
    assert (r.point, r.reason) == (None, UNIFORM_ROI)


def test_two_pixel_roi_has_no_point() -> None:
    r = cfpg_point(textured(40, 40), (10, 10, 12, 12), CFG)  # 2 x 2 px < min_roi_px = 4
    assert (r.point, r.reason) == (None, ROI_TOO_SMALL)


def test_box_outside_the_tile_has_no_point() -> None:
    r = cfpg_point(textured(40, 40), (50, 5, 80, 30), CFG)
    assert (r.point, r.reason) == (None, BOX_OUTSIDE_IMAGE)


def test_box_across_the_image_border_uses_its_inside_part() -> None:
    img = textured(80, 80, seed=2)
    img[disk(80, 80, 10, 12, 8)] = 240  # object in the top-left corner, box sticks out of the tile
    r = cfpg_point(img, (-15, -10, 30, 32), CFG)
    assert r.roi_xyxy == (0, 0, 30, 32)
    assert r.reason == OK
    assert r.point == (10.0, 12.0)


def test_cfpg_points_marks_missing_points_as_nan() -> None:
    img = textured(120, 120)
    img[disk(120, 120, 60, 50, 15)] = 220
    pts, results = cfpg_points(img, np.array([[30, 20, 91, 81], [5, 5, 7, 7]], float), CFG)
    assert pts.shape == (2, 2)
    assert tuple(pts[0]) == (60.0, 50.0)
    assert np.isnan(pts[1]).all() and results[1].reason == ROI_TOO_SMALL


def test_same_input_same_point() -> None:
    img = textured(90, 90, seed=3)
    img[disk(90, 90, 47, 40, 13)] = (200, 180, 90)
    assert cfpg_point(img, (20, 10, 80, 75), CFG) == cfpg_point(img, (20, 10, 80, 75), CFG)


def test_nodata_never_becomes_the_object() -> None:
    img = textured(80, 100, seed=4)
    img[:, :40] = 0  # a scene collar: nodata, darker than anything and a perfect rectangle
    img[disk(80, 100, 70, 40, 12)] = 210
    valid = img.any(axis=2)
    r = cfpg_point(img, (20, 10, 95, 70), CFG, valid=valid)
    assert r.reason == OK and r.point == (70.0, 40.0)
    all_nodata = cfpg_point(img, (0, 0, 30, 30), CFG, valid=valid)
    assert (all_nodata.point, all_nodata.reason) == (None, ROI_NODATA)
