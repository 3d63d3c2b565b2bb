"""Local-regularised segmentation loss L_Seg (eq. 4, from SeNet), on valid pixels and 8-neighbour pairs.

L_Seg = 1/N Σ_i { -log p_{l_i,i} + λ/2 Σ_{j∈Nb(i)} Σ_c (p_{c,i} - p_{c,j})² exp(-(x_i - x_j)² / σ) }

Choices:
- N is the number of valid pixels in the batch; Nb(i) are the neighbours that lie inside the image and are
  valid (border pixels have 3 or 5, pixels next to nodata fewer); a nodata pixel has no term at all.
- x is the model's input image; (x_i - x_j)² is the squared Euclidean distance over all bands.
- σ is computed per image as the mean of (x_i - x_j)² over all its valid ordered neighbour pairs (each
  unordered pair counted twice, which leaves the mean unchanged). σ is clamped to 1e-12 so a constant image
  (all distances 0) gives weight exp(0) = 1 instead of 0/0.
- σ and the weights depend on the image only, so no gradient flows through them. Colours of nodata pixels
  are never read (they may be NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rrsis.losses.neighbours import OFFSETS, pair_mask, shift
from rrsis.losses.pixelwise import true_class_log_prob, valid_pixels, zero_loss

SIGMA_FLOOR = 1e-12


def neighbour_sigma(image: Tensor, mask: Tensor) -> Tensor:
    """(B,) per-image σ = mean squared colour distance over valid 8-neighbour pairs."""
    total = image.new_zeros(image.shape[0])
    count = image.new_zeros(image.shape[0])
    for dy, dx in OFFSETS:
        pairs = pair_mask(mask, dy, dx)
        d2 = (image - shift(image, dy, dx)).pow(2).sum(dim=1)
        total = total + (d2 * pairs).sum(dim=(1, 2))
        count = count + pairs.sum(dim=(1, 2))
    return (total / count.clamp(min=1)).clamp(min=SIGMA_FLOOR)


def local_regularised_loss(
    logits: Tensor, target: Tensor, image: Tensor, valid: Tensor | None = None, lam: float = 10.0
) -> Tensor:
    """Eq. 4 averaged over the valid pixels of the batch."""
    mask = valid_pixels(logits, target, valid)
    if image.shape[0] != logits.shape[0] or image.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"L_Seg: image {tuple(image.shape)} does not match logits {tuple(logits.shape)}")
    n = mask.sum()
    if n == 0:
        return zero_loss(logits)
    nll = -true_class_log_prob(logits, target)[mask].sum()
    # nodata pixels may carry NaN colours; they are in no pair, so zeroing them changes nothing but NaN * 0
    image = torch.where(mask.unsqueeze(1), image.detach().to(logits.dtype), 0.0)
    sigma = neighbour_sigma(image, mask).view(-1, 1, 1)
    p = torch.softmax(logits, dim=1)
    smooth = logits.new_zeros(())
    for dy, dx in OFFSETS:
        pairs = pair_mask(mask, dy, dx)
        weight = torch.exp(-(image - shift(image, dy, dx)).pow(2).sum(dim=1) / sigma)
        p_diff = (p - shift(p, dy, dx)).pow(2).sum(dim=1)
        smooth = smooth + (p_diff * weight * pairs).sum()
    return (nll + 0.5 * lam * smooth) / n
