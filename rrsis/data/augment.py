"""Geometric augmentations for (image, label, valid) together: flips and 90-degree rotations.

Only the dihedral group of the square: no resampling, so labels stay exact and nodata masks stay aligned.
"""

from __future__ import annotations

import numpy as np
import torch


def dihedral(arr: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by k*90 degrees, then optionally flip left-right."""
    out = np.rot90(arr, k, axes=(-2, -1))
    return np.flip(out, axis=-1) if flip else out


def random_dihedral(
    image: np.ndarray, label: np.ndarray, valid: np.ndarray, generator: torch.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One of the 8 flips/rotations drawn with torch's RNG (seeded per DataLoader worker and epoch)."""
    k = int(torch.randint(0, 4, (), generator=generator))
    flip = bool(torch.randint(0, 2, (), generator=generator))
    return (
        np.ascontiguousarray(dihedral(image, k, flip)),
        np.ascontiguousarray(dihedral(label, k, flip)),
        np.ascontiguousarray(dihedral(valid, k, flip)),
    )
