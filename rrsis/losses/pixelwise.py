"""Pixel-wise terms: cross-entropy (eq. 1) and Sørensen-Dice (eq. 2), restricted to valid pixels.

Choices:
- Eq. 1 is written as a sum over the t pixels; we divide by the number of valid pixels (a mean, as eq. 4 does
  with 1/N) so the α, β weights of eq. 3 do not depend on the tile size. With two classes and one-hot y the
  sum over classes of y log p is log p of the true class.
- Eq. 2 is printed as 1 - (Σ y p + ε) / (Σ (y + p) + ε). The paper names the Sørensen-Dice coefficient and
  cites V-Net [17], whose coefficient has 2 Σ y p in the numerator; without the 2 a perfect prediction scores
  0.5, not 0 (the printed form equals 0.5 + 0.5 L_SD up to ε). We keep the 2. y is the water mask (class 1)
  and p its predicted probability; sums run over every valid pixel of the batch (one coefficient per batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rrsis.errors import InputError


def valid_pixels(logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
    """(B, H, W) bool of pixels that count: label >= 0 (-1 = nodata) and the optional `valid` mask."""
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise InputError(f"loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    mask = target >= 0
    if valid is not None:
        if valid.shape != target.shape:
            raise InputError(f"loss: valid mask {tuple(valid.shape)} does not match target {tuple(target.shape)}")
        mask = mask & valid.bool()
    return mask


def true_class_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    """log p_{l_i, i}: (B, H, W) log-probability of each pixel's label (nodata labels read as class 0)."""
    return F.log_softmax(logits, dim=1).gather(1, target.clamp(min=0).long().unsqueeze(1)).squeeze(1)


def zero_loss(logits: Tensor) -> Tensor:
    """A zero that still belongs to the graph (a batch with no valid pixel contributes nothing)."""
    return logits.sum() * 0.0


def cross_entropy(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Eq. 1: mean over valid pixels of -log p of the true class."""
    mask = valid_pixels(logits, target, valid)
    if not mask.any():
        return zero_loss(logits)
    return -true_class_log_prob(logits, target)[mask].mean()


def dice(logits: Tensor, target: Tensor, valid: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Eq. 2 on the water class: 1 - (2 Σ y p + ε) / (Σ y + Σ p + ε) over the valid pixels of the batch."""
    mask = valid_pixels(logits, target, valid)
    p = torch.softmax(logits, dim=1)[:, 1][mask]
    y = (target[mask] == 1).to(p.dtype)
    return 1.0 - (2.0 * (y * p).sum() + eps) / (y.sum() + p.sum() + eps)
