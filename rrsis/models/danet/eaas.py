"""Explicit affinity alignment strategy (EAAS), the model side: text-to-visual activation and eq. 2.

The loss side (eq. 1 self-affinity and eq. 3 L_affinity) is in `rrsis.losses.danet`.

No learnable parameters are added. The paper maps F_i "into the same dimension with L_g" without naming the
layer; we reuse the projections that already compare pixels with language in stage i: the PWAM's query
projection (pixels -> key space, `pwams[i].query`) and key projection (text -> key space, `pwams[i].key`),
applied to F_i and to the [CLS] feature L_g. Both land in the same C_i-dimensional space, where the activation
is their scaled dot product. To give the fixed threshold alpha of eq. 2 a meaning the activation is min-max
normalised to [0, 1] per image (as activation maps are usually shown), an explicit choice where the paper is
silent. Hard labels are not differentiable, so the activation is computed without gradient: L_affinity trains
the visual features towards the text's partition of the image, not the other way round.
"""

from __future__ import annotations

import torch

from rrsis.models.danet.pwam import PixelWordAttention


def normalise_activation(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Min-max normalise (B, N) activations to [0, 1] per image; a constant map becomes all zeros."""
    low = logits.amin(dim=-1, keepdim=True)
    high = logits.amax(dim=-1, keepdim=True)
    return (logits - low) / (high - low).clamp_min(eps)


def hard_labels(activation: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 2: 1 where a(x, y) > alpha, else 0 (strictly greater, as written)."""
    return (activation > alpha).to(activation.dtype)


@torch.no_grad()
def text_to_visual_labels(
    pwam: PixelWordAttention, features: torch.Tensor, sentence: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Â_tv of one stage: (B, N) hard labels from F_i (B, N, C_i) and L_g (B, C_t)."""
    return hard_labels(normalise_activation(pwam.sentence_activation(features, sentence)), alpha)
