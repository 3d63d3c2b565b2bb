"""A referring sample (image, expression, box and/or mask) as plain data, and how its pixels are read.

A `ReferringSample` holds paths and annotations, never pixels. Pixels are read when a sample is used
(`load_image`, `load_mask`), so a split of 17k expressions costs a few MB until it is iterated. Every format
reader (`rrsis.data.rsvg`, `.refer`, `.jsonl`) builds these; `rrsis.data.referring` picks the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rrsis.data.coco_masks import segments_to_mask
from rrsis.errors import InputError


@dataclass(frozen=True)
class ReferringSample:
    """One expression. `box_xyxy` in image pixels (continuous); the mask comes from a file or COCO segments."""

    sample_id: str
    image_path: str
    text: str
    category: str = ""
    box_xyxy: tuple[float, float, float, float] | None = None
    mask_path: str | None = None
    segments: tuple[Any, ...] = field(default=(), compare=False)  # COCO polygons / RLE of every instance
    image_hw: tuple[int, int] | None = None  # needed to rasterise `segments`

    @property
    def has_mask(self) -> bool:
        return self.mask_path is not None or bool(self.segments)


def load_image(sample: ReferringSample) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    img = cv2.imread(sample.image_path, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{sample.image_path}: cannot read image (sample {sample.sample_id})")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_mask(sample: ReferringSample, shape_hw: tuple[int, int] | None = None) -> np.ndarray | None:
    """(H, W) bool ground-truth mask (union of the referred instances), or None when the sample has none."""
    if sample.mask_path is not None:
        m = cv2.imread(sample.mask_path, cv2.IMREAD_UNCHANGED)
        if m is None:
            raise InputError(f"{sample.mask_path}: cannot read mask (sample {sample.sample_id})")
        mask = (m.max(axis=2) if m.ndim == 3 else m) > 0
    elif sample.segments:
        hw = sample.image_hw or shape_hw
        if hw is None:
            raise InputError(f"sample {sample.sample_id}: COCO segments need the image size")
        mask = segments_to_mask(sample.segments, hw, where=f"sample {sample.sample_id}")
    else:
        return None
    if shape_hw is not None and mask.shape != tuple(shape_hw):
        raise InputError(f"sample {sample.sample_id}: mask is {mask.shape}, image is {tuple(shape_hw)}")
    return mask


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: {what} directory not found")
    return p
