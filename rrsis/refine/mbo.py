"""Mask boundary iterative optimisation (MBO, PSLG-SAM sec. 3.3, eq. 10-12) with OpenCV's GrabCut.

The SAM mask is eroded to remove its noisy rim; the eroded core is sure foreground and, as the paper
says, everything else starts as background. Our choice for "background": inside the box it is
*probable* background (GrabCut may give it to the object, which is how the rim comes back along real
colour edges); outside the box — the window margin — it is sure background when
`outside_box_background` (the grounding box is a prior, as GrabCut's rectangle). GrabCut then fits
one GMM per side (eq. 10; OpenCV uses K = 5 full-covariance components), computes the component
posteriors (eq. 11-12), builds the data + smoothness energy and cuts it with max-flow/min-cut; one
`cv2.grabCut` call with iterCount=1 is one such EM + min-cut round. Rounds repeat until fewer than
`tol_frac` of the window's pixels change label, or `max_iterations`.

Only a window around the box (grown by `window_margin_px`) is processed, never the whole tile: cost
scales with the box, not the tile. Pixels of the input mask outside the window are returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rrsis.errors import InputError
from rrsis.refine.cfpg import roi_bounds
from rrsis.refine.config import MboConfig

OK = "ok"
BOX_OUTSIDE_IMAGE = "box_outside_image"
NO_SURE_FOREGROUND = "no_sure_foreground"
NO_BACKGROUND = "no_background"


@dataclass(frozen=True)
class MboResult:
    """The refined (H, W) bool mask, GrabCut rounds run, whether they converged, and why if skipped."""

    mask: np.ndarray
    iterations: int
    converged: bool
    reason: str = OK
    window_xyxy: tuple[int, int, int, int] | None = None


def mbo_window(
    box_xyxy: np.ndarray | tuple[float, ...], shape_hw: tuple[int, int], margin_px: int
) -> tuple[int, int, int, int]:
    """The box grown by `margin_px` on every side, clipped to the tile (end-exclusive xyxy)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    grown = (x1 - margin_px, y1 - margin_px, x2 + margin_px, y2 + margin_px)
    return roi_bounds(grown, shape_hw[0], shape_hw[1])


def initial_labels(
    mask: np.ndarray,
    box_in_window: tuple[int, int, int, int],
    cfg: MboConfig,
) -> np.ndarray:
    """GrabCut's trimap for one window: eroded mask -> GC_FGD, rest of box -> GC_PR_BGD, margin -> GC_BGD."""
    kernel = np.ones((cfg.erode_kernel_px, cfg.erode_kernel_px), np.uint8)
    eroded = cv2.erode(mask.astype(np.uint8), kernel, iterations=cfg.erode_iterations, borderValue=0)
    outside = np.uint8(cv2.GC_BGD if cfg.outside_box_background else cv2.GC_PR_BGD)
    labels = np.full(mask.shape, outside, dtype=np.uint8)
    bx1, by1, bx2, by2 = box_in_window
    labels[by1:by2, bx1:bx2] = cv2.GC_PR_BGD
    labels[eroded > 0] = cv2.GC_FGD
    return labels


def foreground(labels: np.ndarray) -> np.ndarray:
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def mbo_refine(
    image: np.ndarray,
    mask: np.ndarray,
    box_xyxy: np.ndarray | tuple[float, ...],
    cfg: MboConfig,
    valid: np.ndarray | None = None,
) -> MboResult:
    """Refine one object's mask inside a window around its box; the rest of the tile mask is kept.

    `valid` (H, W) bool marks pixels with data: nodata is sure background and never joins the object.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"MBO needs an (H, W, 3) uint8 tile, got shape {image.shape} dtype {image.dtype}")
    if mask.shape != image.shape[:2] or (valid is not None and valid.shape != image.shape[:2]):
        raise InputError(f"MBO mask/valid shapes {mask.shape} do not match the tile {image.shape[:2]}")
    out = mask.astype(bool, copy=True)
    box = roi_bounds(box_xyxy, image.shape[0], image.shape[1])
    if box[2] <= box[0] or box[3] <= box[1]:
        return MboResult(out, 0, False, BOX_OUTSIDE_IMAGE)
    win = mbo_window(box_xyxy, image.shape[:2], cfg.window_margin_px)
    wx1, wy1, wx2, wy2 = win
    box_in_window = (box[0] - wx1, box[1] - wy1, box[2] - wx1, box[3] - wy1)
    labels = initial_labels(out[wy1:wy2, wx1:wx2], box_in_window, cfg)
    if valid is not None:
        labels[~valid[wy1:wy2, wx1:wx2]] = cv2.GC_BGD
    if np.count_nonzero(labels == cv2.GC_FGD) < cfg.min_fg_px:
        return MboResult(out, 0, False, NO_SURE_FOREGROUND, win)
    if not np.any((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)):
        return MboResult(out, 0, False, NO_BACKGROUND, win)
    crop = np.ascontiguousarray(image[wy1:wy2, wx1:wx2])
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    tol_px = cfg.tol_frac * labels.size
    prev = foreground(labels)
    mode = cv2.GC_INIT_WITH_MASK
    cv2.setRNGSeed(cfg.seed)
    converged, rounds = False, 0
    while rounds < cfg.max_iterations:
        cv2.grabCut(crop, labels, (0, 0, 0, 0), bgd_model, fgd_model, 1, mode)
        mode, rounds = cv2.GC_EVAL, rounds + 1
        cur = foreground(labels)
        changed = int(np.count_nonzero(cur != prev))
        prev = cur
        if changed <= tol_px:
            converged = True
            break
    out[wy1:wy2, wx1:wx2] = prev
    return MboResult(out, rounds, converged, OK, win)
