"""DANet's loss (eq. 11): L_BCE(Ȳ, Y) + lambda_af * L_affinity, with eq. 1 and eq. 3 of EAAS.

Choices where the paper is vague:
- Eq. 1 divides F̃ F̃^T by ||F̃||², read by default (`norm="frobenius"`) as the squared Frobenius norm of the
  whole flattened (hw, c) matrix (one scalar per image: the norm of a matrix, as written). Its logits are at
  most ~1/(hw), so the affinity rows are close to uniform; `norm="cosine"` divides entry (m, n) by
  ||f_m|| ||f_n|| instead (logits in [-1, 1]) for researchers who read the equation that way. The softmax runs
  over the last axis (each row is a distribution over the other pixels). Zero norms (e.g. no
  pseudo-foreground in Â_tv) are clamped to epsilon, which gives zero logits: a uniform affinity row.
- Eq. 3 is the squared Frobenius norm per image and stage; the loss sums the configured stages and averages
  over the batch.
- BCE ignores pixels whose target is outside {0, 1} (e.g. -1 = nodata in Sen1Floods11 labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def self_affinity(x: torch.Tensor, norm: str = "frobenius", eps: float = 1e-12) -> torch.Tensor:
    """Eq. 1: Softmax(X X^T / ||X||^2) per image; X (B, N, C) -> (B, N, N)."""
    if norm == "frobenius":
        scale = x.pow(2).sum(dim=(1, 2), keepdim=True).clamp_min(eps)
    elif norm == "cosine":
        rows = x.norm(dim=-1).clamp_min(eps**0.5)
        scale = rows[:, :, None] * rows[:, None, :]
    else:
        raise ValueError(f"unknown affinity norm {norm!r}")
    return (x @ x.transpose(1, 2) / scale).softmax(dim=-1)


def affinity_loss(features: torch.Tensor, labels: torch.Tensor, norm: str = "frobenius") -> torch.Tensor:
    """Eq. 3 per image: ||A_F ⊙ S(Â_tv) - S(Â_tv)||_F^2 with S = eq. 1; F (B, N, C), Â_tv (B, N) -> (B,)."""
    a_f = self_affinity(features, norm)
    target = self_affinity(labels[:, :, None].to(features.dtype), norm)
    return (a_f * target - target).pow(2).sum(dim=(1, 2))


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE over pixels whose target is 0 or 1; logits (B, 1, H, W) or (B, H, W), target (B, H, W)."""
    logits = logits.reshape(target.shape)
    valid = (target == 0) | (target == 1)
    if not bool(valid.any()):
        return logits.sum() * 0.0  # keeps the graph; nothing to learn from this batch
    return F.binary_cross_entropy_with_logits(logits[valid], target[valid].to(logits.dtype))


@dataclass
class DanetLoss:
    total: torch.Tensor
    bce: torch.Tensor
    affinity: torch.Tensor


def danet_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    affinity_features: list[torch.Tensor],
    affinity_labels: list[torch.Tensor],
    lambda_af: float,
    affinity_norm: str = "frobenius",
) -> DanetLoss:
    """Eq. 11. With no affinity stages (EAAS off, or eval mode) L_affinity is 0 and this is LAVT's BCE."""
    bce = masked_bce(logits, target)
    affinity = logits.new_zeros(())
    for feats, labels in zip(affinity_features, affinity_labels, strict=True):
        affinity = affinity + affinity_loss(feats, labels, affinity_norm).mean()
    return DanetLoss(total=bce + lambda_af * affinity, bce=bce, affinity=affinity)
