"""The 8-neighbourhood of every pixel, with explicit image-boundary handling, for eq. 4 and eq. 5.

`shift(t, dy, dx)[..., y, x]` is `t[..., y + dy, x + dx]`, filled with a constant where that neighbour lies
outside the image (no wrap-around). `pair_mask(valid, dy, dx)` is True only where both the pixel and that
neighbour exist and are valid, so border pixels have 3 or 5 neighbours and nodata pixels none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# (dy, dx) of the eight neighbours, row-major.
OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def shift(t: Tensor, dy: int, dx: int, fill: float = 0.0) -> Tensor:
    """Value of the (dy, dx) neighbour at every pixel of a (..., H, W) tensor; `fill` outside the image."""
    h, w = t.shape[-2:]
    padded = F.pad(t, (1, 1, 1, 1), value=fill)
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def pair_mask(valid: Tensor, dy: int, dx: int) -> Tensor:
    """(B, H, W) bool: the pixel and its (dy, dx) neighbour are both inside the image and valid."""
    return valid & shift(valid.to(torch.uint8), dy, dx).bool()
