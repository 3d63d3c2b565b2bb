"""Clustering-based foreground point generator (CFPG, PSLG-SAM sec. 3.2, eq. 4-9).

Given a tile and a box, find one point inside the object so SAM gets a box *and* a foreground point.
Each equation is its own function (tested one by one); `cfpg_point` chains them and turns every
degenerate ROI into a `CfpgResult` with `point=None` and a reason instead of an exception.

Where the paper is vague, our choices (all constants live in `CfpgConfig`):
- nodata: with a `valid` mask, nodata pixels are left out of the clustering and are background; an ROI
  with fewer than min_roi_px^2 valid pixels is "roi_nodata".
- eq. 4: box xyxy floats -> integer slice [floor(y1):ceil(y2), floor(x1):ceil(x2)], clipped to the image
  (a box across the image border keeps its inside part). Coordinates are pixel indices, as SAM's.
- eq. 5: KMeans++ (k = 2, `rrsis.refine.kmeans`) on RGB values as float; large ROIs are fitted on a seeded subsample of
  `kmeans_max_pixels` pixels and every pixel is then labelled by its nearest centre. The paper does not
  say which cluster is the foreground: we take the cluster that covers fewer ROI-border pixels (a box
  is drawn around its object, so the ROI frame is mostly background); ties go to the smaller cluster.
  An ROI whose per-channel std is below `uniform_std` has nothing to cluster: "uniform_roi".
- opening then closing with square kernels (`open_kernel_px`, `close_kernel_px`).
- eq. 6: Euclidean distance transform (`dist_mask_px`, 0 = exact) of the cleaned binary map.
- markers: D > `dist_threshold_frac` * max D (relative, OpenCV's watershed recipe); sure background =
  outside the binary map dilated `bg_dilate_iterations` times by a `bg_dilate_kernel_px` square; the
  rest is "unknown" for watershed, which floods the ROI colours; boundaries come back as -1. The
  threshold is global over the ROI, so a foreground fragment much thinner than the thickest object gets
  no marker and is dropped here already (the paper's "only relevant foreground regions are marked").
- connected components (4-connectivity, so watershed's one-pixel boundaries separate basins) on the
  watershed foreground (labels >= 2).
- eq. 7: convexity = pixel count / area of the convex hull of the pixel squares (corners), so a full
  rectangle scores exactly 1 and any region scores in (0, 1].
- eq. 8: area threshold = max(`min_area_px`, `min_area_frac` * ROI area), strict ">" as in the paper;
  ties in convexity go to the larger region.
- eq. 9: mean (x, y) of the region's pixel indices, shifted back to tile coordinates (float).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rrsis.errors import InputError
from rrsis.refine.config import CfpgConfig
from rrsis.refine.kmeans import kmeans, nearest

N_CLUSTERS = 2  # eq. 5: foreground / background
OK = "ok"
BOX_OUTSIDE_IMAGE = "box_outside_image"
ROI_TOO_SMALL = "roi_too_small"
UNIFORM_ROI = "uniform_roi"
NO_FOREGROUND_MARKER = "no_foreground_marker"
NO_REGION_ABOVE_AREA = "no_region_above_area"
ROI_NODATA = "roi_nodata"
REASONS = (OK, BOX_OUTSIDE_IMAGE, ROI_TOO_SMALL, ROI_NODATA, UNIFORM_ROI, NO_FOREGROUND_MARKER, NO_REGION_ABOVE_AREA)


@dataclass(frozen=True)
class CfpgResult:
    """A point prompt (tile pixel x, y) or None, and why."""

    point: tuple[float, float] | None
    reason: str
    roi_xyxy: tuple[int, int, int, int] | None = None
    kappa: float | None = None
    area_px: int = 0
    n_regions: int = 0


@dataclass(frozen=True)
class Region:
    """One connected foreground region of the ROI (eq. 7-9 inputs), in ROI pixel indices."""

    label: int
    area_px: int
    kappa: float
    centroid_xy: tuple[float, float]


def roi_bounds(box_xyxy: np.ndarray | tuple[float, ...], height_px: int, width_px: int) -> tuple[int, int, int, int]:
    """Eq. 4 slice bounds (x1, y1, x2, y2), end-exclusive, clipped to the image (may be empty)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return 0, 0, 0, 0
    cx1 = min(max(math.floor(x1), 0), width_px)
    cy1 = min(max(math.floor(y1), 0), height_px)
    cx2 = min(max(math.ceil(x2), 0), width_px)
    cy2 = min(max(math.ceil(y2), 0), height_px)
    return cx1, cy1, max(cx2, cx1), max(cy2, cy1)


def crop_roi(image: np.ndarray, bounds: tuple[int, int, int, int]) -> np.ndarray:
    """Eq. 4: I_ROI = I[y1:y2, x1:x2]."""
    x1, y1, x2, y2 = bounds
    return image[y1:y2, x1:x2]


def is_uniform(roi: np.ndarray, cfg: CfpgConfig, valid: np.ndarray | None = None) -> bool:
    pixels = roi.reshape(-1, roi.shape[-1]) if valid is None else roi[valid]
    return bool(pixels.astype(np.float64).std(axis=0).max() < cfg.uniform_std)


def cluster_binary(roi: np.ndarray, cfg: CfpgConfig, valid: np.ndarray | None = None) -> np.ndarray:
    """Eq. 5: KMeans++ (k=2) on pixel colours -> binary map I'_ROI (uint8, 1 = foreground cluster).

    With a `valid` mask, nodata pixels take no part in the fit or the border rule and are background.
    """
    h, w = roi.shape[:2]
    ok = np.ones((h, w), bool) if valid is None else valid
    pixels = roi.reshape(-1, roi.shape[-1]).astype(np.float32)
    fit_on = pixels[ok.ravel()]
    if len(fit_on) > cfg.kmeans_max_pixels:
        rng = np.random.default_rng(cfg.seed)
        fit_on = fit_on[rng.choice(len(fit_on), cfg.kmeans_max_pixels, replace=False)]
    centres = kmeans(fit_on, N_CLUSTERS, n_init=cfg.kmeans_n_init, max_iter=cfg.kmeans_max_iter, seed=cfg.seed)
    labels = np.where(ok, nearest(pixels, centres)[0].reshape(h, w), N_CLUSTERS)  # nodata -> an extra label
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    border_counts = np.bincount(border, minlength=N_CLUSTERS + 1)
    sizes = np.bincount(labels.ravel(), minlength=N_CLUSTERS + 1)
    fg = min(range(N_CLUSTERS), key=lambda c: (border_counts[c], sizes[c], c))
    return (labels == fg).astype(np.uint8)


def open_close(binary: np.ndarray, cfg: CfpgConfig) -> np.ndarray:
    """Opening (removes specks) then closing (bridges small gaps) of the binary map."""
    if cfg.morph_iterations == 0:
        return binary.copy()
    k_open = np.ones((cfg.open_kernel_px, cfg.open_kernel_px), np.uint8)
    k_close = np.ones((cfg.close_kernel_px, cfg.close_kernel_px), np.uint8)
    out = cv2.morphologyEx(binary, cv2.MORPH_OPEN, k_open, iterations=cfg.morph_iterations)
    return cv2.morphologyEx(out, cv2.MORPH_CLOSE, k_close, iterations=cfg.morph_iterations)


def distance_map(binary: np.ndarray, cfg: CfpgConfig) -> np.ndarray:
    """Eq. 6: Euclidean distance from each foreground pixel to the nearest background pixel (float32).

    Pixels beyond the ROI edge do not count as background: the box cuts the scene, not the object.
    """
    padded = cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    mask_size = cv2.DIST_MASK_PRECISE if cfg.dist_mask_px == 0 else cfg.dist_mask_px
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, mask_size)
    return dist[1:-1, 1:-1]


def watershed_labels(roi: np.ndarray, binary: np.ndarray, dist: np.ndarray, cfg: CfpgConfig) -> np.ndarray | None:
    """Markers from thresholded D, watershed on the ROI colours -> I''_ROI labels (None: no marker).

    Labels: -1 boundary, 1 background, >= 2 one basin per foreground marker.
    """
    peak = float(dist.max())
    if peak <= 0.0:
        return None
    sure_fg = (dist > cfg.dist_threshold_frac * peak).astype(np.uint8)
    if cfg.bg_dilate_iterations > 0:
        kernel = np.ones((cfg.bg_dilate_kernel_px, cfg.bg_dilate_kernel_px), np.uint8)
        sure_bg = cv2.dilate(binary, kernel, iterations=cfg.bg_dilate_iterations)
    else:
        sure_bg = binary.copy()
    _, markers = cv2.connectedComponents(sure_fg, connectivity=8)
    markers = markers.astype(np.int32) + 1  # background marker 1, foreground markers 2..
    markers[(sure_bg > 0) & (sure_fg == 0)] = 0  # unknown: watershed decides
    colour = np.ascontiguousarray(roi[..., :3], dtype=np.uint8)
    return cv2.watershed(colour, markers)  # type: ignore[no-any-return]


def convexity(region: np.ndarray) -> float:
    """Eq. 7: kappa = A(R) / A_hull(R), hull over the corners of the region's pixel squares."""
    area = int(np.count_nonzero(region))
    if area == 0:
        return 0.0
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    corners = (pts[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)).reshape(-1, 2)
    hull = cv2.convexHull(corners)
    return area / float(cv2.contourArea(hull))


def regions_of(labels: np.ndarray) -> list[Region]:
    """Connected foreground regions of the watershed result with area, kappa (eq. 7), centroid (eq. 9)."""
    fg = (labels >= 2).astype(np.uint8)
    n, comp = cv2.connectedComponents(fg, connectivity=4)
    out = []
    for lab in range(1, n):
        region = comp == lab
        ys, xs = np.nonzero(region)
        out.append(Region(lab, len(xs), convexity(region), (float(xs.mean()), float(ys.mean()))))
    return out


def area_threshold(roi_area_px: int, cfg: CfpgConfig) -> float:
    return max(float(cfg.min_area_px), cfg.min_area_frac * roi_area_px)


def select_region(regions: list[Region], threshold_px: float) -> Region | None:
    """Eq. 8: argmax kappa over regions with area > threshold (ties: larger area, then lower label)."""
    kept = [r for r in regions if r.area_px > threshold_px]
    if not kept:
        return None
    return max(kept, key=lambda r: (r.kappa, r.area_px, -r.label))


def cfpg_point(
    image: np.ndarray,
    box_xyxy: np.ndarray | tuple[float, ...],
    cfg: CfpgConfig,
    valid: np.ndarray | None = None,
) -> CfpgResult:
    """Eq. 4-9 on one box of an (H, W, 3) uint8 tile -> the foreground point in tile pixels, or why not.

    `valid` (H, W) bool marks pixels with data; nodata never becomes the object (e.g. a scene's collar).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"CFPG needs an (H, W, 3) uint8 tile, got shape {image.shape} dtype {image.dtype}")
    if valid is not None and valid.shape != image.shape[:2]:
        raise InputError(f"CFPG valid mask shape {valid.shape} does not match the tile {image.shape[:2]}")
    bounds = roi_bounds(box_xyxy, image.shape[0], image.shape[1])
    x1, y1, x2, y2 = bounds
    if x2 <= x1 or y2 <= y1:
        return CfpgResult(None, BOX_OUTSIDE_IMAGE, bounds)
    if min(x2 - x1, y2 - y1) < cfg.min_roi_px:
        return CfpgResult(None, ROI_TOO_SMALL, bounds)
    roi = crop_roi(image, bounds)
    roi_valid = None if valid is None else crop_roi(valid, bounds)
    if roi_valid is not None and np.count_nonzero(roi_valid) < cfg.min_roi_px * cfg.min_roi_px:
        return CfpgResult(None, ROI_NODATA, bounds)
    if is_uniform(roi, cfg, roi_valid):
        return CfpgResult(None, UNIFORM_ROI, bounds)
    binary = open_close(cluster_binary(roi, cfg, roi_valid), cfg)
    if roi_valid is not None:
        binary[~roi_valid] = 0  # closing must not grow the object into nodata
    labels = watershed_labels(roi, binary, distance_map(binary, cfg), cfg)
    if labels is None:
        return CfpgResult(None, NO_FOREGROUND_MARKER, bounds)
    regions = regions_of(labels)
    best = select_region(regions, area_threshold(roi.shape[0] * roi.shape[1], cfg))
    if best is None:
        return CfpgResult(None, NO_REGION_ABOVE_AREA, bounds, n_regions=len(regions))
    point = (best.centroid_xy[0] + x1, best.centroid_xy[1] + y1)
    return CfpgResult(point, OK, bounds, best.kappa, best.area_px, len(regions))


def cfpg_points(
    image: np.ndarray, boxes_xyxy: np.ndarray, cfg: CfpgConfig, valid: np.ndarray | None = None
) -> tuple[np.ndarray, list[CfpgResult]]:
    """All boxes of a tile: (N, 2) points with NaN rows where CFPG found none (SAM's "no point")."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    results = [cfpg_point(image, b, cfg, valid) for b in boxes]
    pts = np.array([r.point if r.point is not None else (np.nan, np.nan) for r in results], dtype=np.float64)
    return pts.reshape(-1, 2), results
