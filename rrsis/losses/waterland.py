"""The six water-land losses as one module: a weighted sum of terms, term k applied to output head k.

The paper adds one output layer per extra loss term (eq. 3 and eq. 6 use two), so for `ce_dice`
head 0 carries α·L_CE and head 1 β·L_SD, and for `seg_edge` head 0 carries L_Seg and head 1 L_Edge. Head 0 is
the segmentation used at inference. Extra heads beyond the terms are ignored; too few is a ModelError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.losses.edge import structured_edge_loss
from rrsis.losses.local_reg import local_regularised_loss
from rrsis.losses.pixelwise import cross_entropy, dice

# fn(logits, target, image, valid) -> scalar
Term = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]

LOSS_NAMES = ("ce", "dice", "ce_dice", "seg", "edge", "seg_edge")


class HeadSumLoss(nn.Module):
    """Σ_k weight_k · term_k(heads[k]); called as loss(heads, target, image, valid=None)."""

    def __init__(self, name: str, terms: Sequence[tuple[float, Term]]) -> None:
        super().__init__()
        self.name = name
        self.terms = list(terms)

    def forward(self, heads: Sequence[Tensor], target: Tensor, image: Tensor, valid: Tensor | None = None) -> Tensor:
        if len(heads) < len(self.terms):
            raise ModelError(
                f"loss.name={self.name!r} needs {len(self.terms)} output heads "
                f"(model.waterland.aux_heads={len(self.terms) - 1}), the model gave {len(heads)}"
            )
        total = heads[0].new_zeros(())
        for logits, (weight, term) in zip(heads, self.terms, strict=False):
            total = total + weight * term(logits, target, image, valid)
        return total


def heads_for_loss(name: str) -> int:
    """How many output heads the loss needs: 2 for the sums of eq. 3 and eq. 6, otherwise 1."""
    _check(name)
    return 2 if name in ("ce_dice", "seg_edge") else 1


def build_loss(
    name: str, *, alpha: float = 1.0, beta: float = 0.7, lam: float = 10.0, eps: float = 1e-5
) -> HeadSumLoss:
    """The loss `name` (loss.name) with the paper's defaults α = 1.0, β = 0.7, λ = 10, ε = 1e-5."""
    _check(name)

    def ce(logits: Tensor, target: Tensor, image: Tensor, valid: Tensor | None) -> Tensor:
        return cross_entropy(logits, target, valid)

    def sd(logits: Tensor, target: Tensor, image: Tensor, valid: Tensor | None) -> Tensor:
        return dice(logits, target, valid, eps=eps)

    def edge(logits: Tensor, target: Tensor, image: Tensor, valid: Tensor | None) -> Tensor:
        return structured_edge_loss(logits, target, valid, eps=eps)

    seg: Term = partial(local_regularised_loss, lam=lam)
    terms: dict[str, list[tuple[float, Term]]] = {
        "ce": [(1.0, ce)],
        "dice": [(1.0, sd)],
        "ce_dice": [(alpha, ce), (beta, sd)],
        "seg": [(1.0, seg)],
        "edge": [(1.0, edge)],
        "seg_edge": [(1.0, seg), (1.0, edge)],
    }
    return HeadSumLoss(name, terms[name])


def _check(name: str) -> None:
    if name not in LOSS_NAMES:
        raise ModelError(f"loss.name={name!r} is not one of {', '.join(LOSS_NAMES)}")
