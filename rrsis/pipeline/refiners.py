"""Refinement chosen by task: a callable over a batch that turns probabilities into a class mask.

The refine stage is generic: `make_refiner(task, options)` returns a `Refiner` that reads what it needs from
the batch (water-land: `prob` and `valid`; a box/referring task may also read `image` and prompt columns) and
adds `mask` (uint8, 0 = background, 1 = target, 255 = nodata, shape (B, H, W) of the read window). Other
tasks register their refiner in `REFINERS` (the SAM issue plugs CFPG/MBO in here under "boxes").

OpenCV is imported where a mask is cleaned, not with the module: the read, write and inference workers import
this module for `NODATA` and `make_refiner` and never clean a mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rrsis.errors import ConfigError

NODATA = 255
Batch = dict[str, np.ndarray]
Refiner = Callable[[Batch], Batch]


def _remove_small(mask: np.ndarray, value: int, min_px: int) -> np.ndarray:
    """Set 8-connected regions of `value` smaller than `min_px` to the other class (1 - value)."""
    import cv2

    binary = (mask == value).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    small = np.zeros(count, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < min_px
    out = mask.copy()
    out[small[labels]] = 1 - value
    return out


def clean_water_mask(
    prob: np.ndarray, valid: np.ndarray, *, threshold: float, open_px: int, min_mapping_unit_px: int
) -> np.ndarray:
    """Threshold P(water), then optional opening (elliptic, radius `open_px`) and minimum mapping unit.

    The minimum mapping unit applies to both classes: small water specks become land, then small land holes
    become water. It is judged inside the tile's read window (core + at least `overlap_px // 2` pixels of
    context): a region that touches the core and is cut by the window edge still has at least
    `overlap_px // 2` pixels inside the window, so with `min_mapping_unit_px <= overlap_px // 2` the result
    does not depend on the tiling; larger units may judge such border regions by their truncated size.
    """
    import cv2

    mask: np.ndarray = (prob >= threshold).astype(np.uint8)
    if open_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * open_px + 1, 2 * open_px + 1))
        mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), dtype=np.uint8)
    if min_mapping_unit_px > 0:
        mask[~valid] = 0
        mask = _remove_small(mask, 1, min_mapping_unit_px)
        mask[~valid] = 1  # nodata does not count as land when judging land holes
        mask = _remove_small(mask, 0, min_mapping_unit_px)
    mask[~valid] = NODATA
    return mask


@dataclass(frozen=True)
class WaterlandRefiner:
    """Per-tile water/land clean-up (see `clean_water_mask`); `enabled=False` only thresholds."""

    threshold: float = 0.5
    enabled: bool = True
    open_px: int = 0
    min_mapping_unit_px: int = 0

    def __call__(self, batch: Batch) -> Batch:
        prob, valid = batch["prob"], batch["valid"]
        masks = np.empty(prob.shape, dtype=np.uint8)
        for i in range(prob.shape[0]):
            masks[i] = clean_water_mask(
                prob[i],
                valid[i],
                threshold=self.threshold,
                open_px=self.open_px if self.enabled else 0,
                min_mapping_unit_px=self.min_mapping_unit_px if self.enabled else 0,
            )
        batch["mask"] = masks
        return batch


def _waterland(options: dict[str, Any]) -> Refiner:
    return WaterlandRefiner(
        threshold=float(options.get("threshold", 0.5)),
        enabled=bool(options.get("enabled", True)),
        open_px=int(options.get("open_px", 0)),
        min_mapping_unit_px=int(options.get("min_mapping_unit_px", 0)),
    )


# task -> factory(options) -> Refiner; options are plain values (they travel to Ray actors).
# task referring (method danet) cleans P(referred) exactly as P(water): threshold, opening, mapping unit.
REFINERS: dict[str, Callable[[dict[str, Any]], Refiner]] = {"waterland": _waterland, "referring": _waterland}


def make_refiner(task: str, options: dict[str, Any]) -> Refiner:
    if task not in REFINERS:
        raise ConfigError(f"config error: key 'task': {task!r} has no refine stage yet; available: {sorted(REFINERS)}")
    return REFINERS[task](options)
