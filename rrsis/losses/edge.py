"""Structured edge loss L_Edge (eq. 5, from SeNet), on valid pixels and their valid 8-neighbours.

Edge sets: a valid pixel is an edge pixel when at least one of its valid neighbours has the other label;
E(L) holds the edge pixels of class 1 and E(S) those of class 0 (the paper's land = 1; in rrsis class 1 is
water, and the two sets enter eq. 5 symmetrically, so this only renames them). SN_i(j) = 1 for those
differing neighbours. For i in E(L) the summand is log p_{1,i} + log(1 - p_{1,j}); for i in E(S) it is
log(1 - p_{1,i}) + log p_{1,j}: both are log p_{l_i,i} + log p_{l_j,j}, averaged over the differing j.
Every other valid pixel contributes log(1 - Σ_j |p_{1,i} - p_{1,j}| / 8).

Choices:
- Neighbours outside the image or nodata are absent: they are neither edge evidence nor in the smoothness
  sum, and the smoothness mean divides by the number of present neighbours (8 in the interior, as written;
  3 or 5 at the border). A pixel with no present neighbour contributes log(1) = 0.
- log(1 - mean|Δp|) is clamped at log(ε) so a fully contradicting neighbourhood cannot give -inf.
- N is the number of valid pixels in the batch; the loss is -1/N times the sum, as written.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rrsis.losses.neighbours import OFFSETS, pair_mask, shift
from rrsis.losses.pixelwise import true_class_log_prob, valid_pixels, zero_loss


def edge_sets(target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(E(class 1), E(class 0)) as (B, H, W) bool: valid pixels with a valid neighbour of the other label."""
    label = target.clamp(min=0)
    differs = torch.zeros_like(mask)
    for dy, dx in OFFSETS:
        differs |= pair_mask(mask, dy, dx) & (shift(label, dy, dx) != label)
    return differs & (label == 1), differs & (label == 0)


def structured_edge_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Eq. 5 averaged over the valid pixels of the batch."""
    mask = valid_pixels(logits, target, valid)
    n = mask.sum()
    if n == 0:
        return zero_loss(logits)
    label = target.clamp(min=0)
    own = true_class_log_prob(logits, target)  # log p_{l_i, i}
    p1 = torch.softmax(logits, dim=1)[:, 1]
    edge_sum = torch.zeros_like(p1)
    edge_count = torch.zeros_like(p1)
    abs_sum = torch.zeros_like(p1)
    present = torch.zeros_like(p1)
    for dy, dx in OFFSETS:
        pairs = pair_mask(mask, dy, dx)
        other = pairs & (shift(label, dy, dx) != label)
        edge_sum = edge_sum + torch.where(other, own + shift(own, dy, dx), 0.0)
        edge_count = edge_count + other
        abs_sum = abs_sum + torch.where(pairs, (p1 - shift(p1, dy, dx)).abs(), 0.0)
        present = present + pairs
    is_edge = edge_count > 0
    edge_term = (edge_sum / edge_count.clamp(min=1))[is_edge].sum()
    smooth = torch.log((1.0 - abs_sum / present.clamp(min=1)).clamp(min=eps))
    smooth_term = smooth[mask & ~is_edge].sum()
    return -(edge_term + smooth_term) / n
