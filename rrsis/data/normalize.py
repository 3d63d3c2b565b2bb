"""Per-band normalisation statistics from the training split, stored in the checkpoint.

Statistics belong to the model, never to a tile: computing them per tile makes seams and shifts with scene
content. They are streamed block by block (float64 sums over valid pixels only), so any split size works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rrsis.data.pairs import SampleRef, iter_blocks, read_sample
from rrsis.errors import InputError

MIN_STD = 1e-6  # a constant band would divide by zero; keep it finite


@dataclass
class NormStats:
    bands: list[str]
    norm_mean: list[float]
    norm_std: list[float]
    nodata_fill: float = 0.0  # after normalisation 0 is the band mean: invalid pixels look "average"


def apply_stats(
    norm_mean: Sequence[float], norm_std: Sequence[float], nodata_fill: float, image: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """(C,H,W) raw values -> float32 (x - mean) / std per band; a pixel invalid, or NaN in any band, gets
    `nodata_fill` in every band (a half-valid pixel is not a measurement)."""
    if image.ndim != 3 or image.shape[0] != len(norm_mean):
        raise InputError(f"image has shape {image.shape}, the normalisation expects ({len(norm_mean)}, H, W)")
    mean = np.asarray(norm_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(norm_std, dtype=np.float32)[:, None, None]
    with np.errstate(invalid="ignore", over="ignore"):
        out = (image.astype(np.float32, copy=False) - mean) / std
    bad = ~np.asarray(valid, dtype=bool)[None] | ~np.isfinite(out).all(axis=0, keepdims=True)
    return np.where(bad, np.float32(nodata_fill), out).astype(np.float32, copy=False)


def compute_stats(refs: Sequence[SampleRef], bands: Sequence[str]) -> NormStats:
    """Mean and standard deviation of every band over the valid pixels of `refs`."""
    total = np.zeros(len(bands), dtype=np.float64)
    total_sq = np.zeros(len(bands), dtype=np.float64)
    count = 0
    for ref in refs:
        for window in iter_blocks(ref.width, ref.height):
            image, valid, _ = read_sample(ref, window)
            pixels = image[:, valid].astype(np.float64)
            total += pixels.sum(axis=1)
            total_sq += (pixels**2).sum(axis=1)
            count += pixels.shape[1]
    if count == 0:
        raise InputError("no valid pixel in the training split: cannot compute normalisation statistics")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return NormStats(list(bands), mean.tolist(), np.maximum(std, MIN_STD).tolist())
