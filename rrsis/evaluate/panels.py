"""PNG panels for a quick look: image | label | prediction (| Otsu), side by side at native resolution.

The image is stretched per panel between its 2nd and 98th percentiles of valid pixels: for display only,
never fed to a model. Classes: water blue, land tan, ignore/nodata grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from rrsis import storage
from rrsis.errors import InputError

GAP_PX = 4
# RGB per class value: -1 ignore, 0 land, 1 water
COLOURS = {-1: (128, 128, 128), 0: (210, 180, 140), 1: (30, 90, 200)}


def stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H,W) -> (H,W,3) uint8 grey, 2-98 % stretch over valid pixels; invalid pixels black."""
    values = band[valid]
    low, high = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
    scaled = np.clip((band - low) / max(float(high - low), 1e-6), 0, 1)
    grey = np.where(valid, scaled * 255, 0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def colourise(classes: np.ndarray) -> np.ndarray:
    """(H,W) of -1/0/1 -> (H,W,3) uint8 RGB."""
    out = np.zeros((*classes.shape, 3), dtype=np.uint8)
    for value, rgb in COLOURS.items():
        out[classes == value] = rgb
    return out


def compose(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Join (H,W,3) images left to right with white gaps."""
    height = max(p.shape[0] for p in parts)
    gap = np.full((height, GAP_PX, 3), 255, dtype=np.uint8)
    row: list[np.ndarray] = []
    for part in parts:
        padded = np.full((height, part.shape[1], 3), 255, dtype=np.uint8)
        padded[: part.shape[0]] = part
        row.extend([padded, gap])
    return np.concatenate(row[:-1], axis=1)


def write_panel(
    uri: str, band: np.ndarray, valid: np.ndarray, label: np.ndarray, predictions: Sequence[np.ndarray]
) -> None:
    """Write image | label | each prediction as one PNG (local path or object-storage URI)."""
    shown = [colourise(np.where(valid, p, -1)) for p in predictions]
    panel = compose([stretch(band, valid), colourise(label), *shown])
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode panel {uri}")
    if not storage.is_remote(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    storage.put_bytes(uri, encoded.tobytes())
