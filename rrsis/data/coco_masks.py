"""COCO segmentations (polygons, uncompressed and compressed RLE) to boolean masks, without pycocotools.

RLE runs are column-major (Fortran order), alternating background / foreground starting with background.
The compressed string is COCO's: 6-bit chunks offset by 48, 5 data bits + a continuation bit, sign from
bit 4 of the last chunk, and every count after the second stored as a difference to the one two back.
Polygons are filled with OpenCV at rounded vertex positions (pycocotools' rasteriser may differ by a
pixel along edges; this does not change the published metrics beyond rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from rrsis.errors import InputError


def rle_string_counts(s: str) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(counts: Sequence[int], hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"RLE runs sum to {sum(counts)}, image has {h * w} pixels")
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for c in counts:
        if value:
            flat[pos : pos + c] = True
        pos += c
        value = not value
    return flat.reshape((w, h)).T


def polygons_to_mask(polys: Sequence[Sequence[float]], hw: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(hw, dtype=np.uint8)
    for poly in polys:
        pts = np.asarray(poly, dtype=np.float64)
        if pts.size < 6 or pts.size % 2:
            raise ValueError(f"polygon with {pts.size} coordinates (need an even number >= 6)")
        cv2.fillPoly(canvas, [np.round(pts.reshape(-1, 2)).astype(np.int32)], 1)
    return canvas.astype(bool)


def segment_to_mask(seg: Any, hw: tuple[int, int]) -> np.ndarray:
    """One COCO `segmentation` value: a list of polygons, or an RLE dict {'counts', 'size'}."""
    if isinstance(seg, dict):
        size = tuple(int(v) for v in seg.get("size", hw))
        if size != tuple(hw):
            raise ValueError(f"RLE size {list(size)} differs from the image size {list(hw)}")
        counts = seg.get("counts")
        if isinstance(counts, (bytes, bytearray)):
            counts = counts.decode("ascii")
        runs = rle_string_counts(counts) if isinstance(counts, str) else [int(c) for c in counts or []]
        return rle_to_mask(runs, hw)
    if isinstance(seg, list):
        return polygons_to_mask(seg, hw)
    raise ValueError(f"segmentation of type {type(seg).__name__} (need polygons or RLE)")


def segments_to_mask(segments: Sequence[Any], hw: tuple[int, int], where: str = "") -> np.ndarray:
    """Union of several instances' segmentations (RRSIS-M refers to several objects at once)."""
    mask = np.zeros(hw, dtype=bool)
    for seg in segments:
        try:
            mask |= segment_to_mask(seg, hw)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{where}: bad segmentation: {exc}") from exc
    return mask
