"""Typed configs of the PSLG-SAM refinement modules: CFPG (paper sec. 3.2) and MBO (sec. 3.3).

Plain dataclasses (no omegaconf import) so `rrsis.refine` stays pure; `rrsis.models.sam.config.SamConfig`
nests them so a job config reaches them as `model.sam.cfpg.*` and `model.sam.mbo.*`. The paper gives no
numeric values for these steps: every default below is our choice, named so a user can change it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrsis.fields import bounded, choice


@dataclass
class CfpgConfig:
    """Constants of the clustering-based foreground point generator (eq. 4-9)."""

    enabled: bool = True
    min_roi_px: int = bounded(4, 1, 100000)  # eq. 4: ROI narrower or shorter than this -> "roi_too_small"
    uniform_std: float = bounded(2.0, 0.0)  # max per-channel std below which the ROI is "uniform_roi"
    kmeans_n_init: int = bounded(2, 1, 100)  # eq. 5: KMeans++ restarts
    kmeans_max_iter: int = bounded(100, 1, 10000)
    kmeans_max_pixels: int = bounded(4096, 16)  # fit on a seeded subsample of this many pixels, label all
    seed: int = 0  # KMeans++ seeding and the subsample
    open_kernel_px: int = bounded(3, 1, 101)  # opening (noise removal) kernel, square
    close_kernel_px: int = bounded(3, 1, 101)  # closing (gap bridging) kernel, square
    morph_iterations: int = bounded(1, 0, 20)
    dist_mask_px: int = choice(5, 3, 5, 0)  # eq. 6 cv2.distanceTransform mask size (0 = exact)
    dist_threshold_frac: float = bounded(0.5, 0.0, 1.0, open_low=True, open_high=True)  # markers: D > frac*max D
    bg_dilate_iterations: int = bounded(2, 0, 50)  # sure background = outside the dilated binary map
    bg_dilate_kernel_px: int = bounded(3, 1, 101)  # square kernel of that dilation
    min_area_px: int = bounded(9, 0)  # eq. 8 area threshold (pixels); also scaled by min_area_frac
    min_area_frac: float = bounded(0.01, 0.0, 1.0)  # eq. 8 threshold = max(min_area_px, frac * ROI area)


@dataclass
class MboConfig:
    """Constants of the mask boundary iterative optimisation (GrabCut, eq. 10-12)."""

    enabled: bool = True
    erode_kernel_px: int = bounded(5, 1, 101)  # erosion of the SAM mask -> sure foreground
    erode_iterations: int = bounded(1, 1, 50)
    window_margin_px: int = bounded(16, 0, 4096)  # GrabCut runs on the box grown by this margin
    outside_box_background: bool = True  # window pixels outside the box are sure background
    max_iterations: int = bounded(5, 1, 100)  # cap on GrabCut (EM + min-cut) rounds
    tol_frac: float = bounded(0.001, 0.0, 1.0)  # converged when < tol_frac of the window flips in a round
    min_fg_px: int = bounded(4, 1)  # fewer sure-foreground pixels after erosion -> keep the input mask
    seed: int = 0  # OpenCV's RNG (GrabCut's GMM k-means init) is seeded per call: same input, same mask
