"""Hand-computed values of the six water-land losses (eq. 1-6), nodata exclusion and 8-neighbour boundaries.

Probabilities are set through 2-class logits: logits (0, ln 3) give p1 = 0.75, (0, 0) give 0.5 and
(0, -ln 3) give 0.25. Every expected value below is written as the arithmetic that produces it.
"""

from __future__ import annotations

import math

import pytest
import torch

from rrsis.errors import ModelError
from rrsis.losses import LOSS_NAMES, build_loss, heads_for_loss
from rrsis.losses.edge import edge_sets, structured_edge_loss
from rrsis.losses.local_reg import local_regularised_loss, neighbour_sigma
from rrsis.losses.neighbours import OFFSETS, pair_mask
from rrsis.losses.pixelwise import cross_entropy, dice

LN3 = math.log(3.0)
EPS = 1e-5


def logits_for(p1: list[list[float]]) -> torch.Tensor:
    """(1, 2, H, W) logits whose softmax gives class-1 probability p1 (0.25, 0.5 or 0.75 here)."""
    table = {0.75: LN3, 0.5: 0.0, 0.25: -LN3}
    z1 = torch.tensor([[table[v] for v in row] for row in p1], dtype=torch.float64)
    return torch.stack([torch.zeros_like(z1), z1])[None]


def labels(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)[None]


def image(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None, None]


def test_cross_entropy_eq1_mean_over_valid_pixels() -> None:
    logits = logits_for([[0.75, 0.75, 0.25]])
    target = labels([[1, 0, -1]])  # third pixel is nodata
    # (-ln 0.75 - ln 0.25) / 2 valid pixels
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert cross_entropy(logits, target).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.836988, abs=1e-6)
    # a `valid` mask removes the second pixel too: -ln 0.75
    valid = torch.tensor([[[True, False, True]]])
    assert cross_entropy(logits, target, valid).item() == pytest.approx(-math.log(0.75), abs=1e-9)


def test_dice_eq2_on_water_class() -> None:
    logits = logits_for([[0.75, 0.75, 0.25]])
    target = labels([[1, 0, -1]])
    # y = (1, 0), p = (0.75, 0.75): 1 - (2 * 0.75 + eps) / (1 + 1.5 + eps) = 1 - 1.5 / 2.5 = 0.4
    expected = 1 - (2 * 0.75 + EPS) / (1 + 1.5 + EPS)
    assert dice(logits, target, eps=EPS).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.4, abs=1e-5)
    # no water in label or prediction mass -> (0 + eps) / (0 + p-sum + eps); all-land with p1 = 0.25:
    # 1 - eps / (0.25 + eps)
    land = dice(logits_for([[0.25]]), labels([[0]]), eps=EPS).item()
    assert land == pytest.approx(1 - EPS / (0.25 + EPS), abs=1e-9)


def test_ce_dice_eq3_applies_term_k_to_head_k() -> None:
    target = labels([[1, 0, -1]])
    head0 = logits_for([[0.75, 0.75, 0.25]])
    head1 = logits_for([[0.5, 0.5, 0.5]])
    loss = build_loss("ce_dice")
    # alpha * CE(head0) + beta * SD(head1); SD(head1) = 1 - (2 * 0.5 + eps) / (1 + 1.0 + eps) = 0.5
    ce = (-math.log(0.75) - math.log(0.25)) / 2
    sd = 1 - (2 * 0.5 + EPS) / (1 + 1.0 + EPS)
    expected = 1.0 * ce + 0.7 * sd
    assert loss([head0, head1], target, image([[0, 0, 0]])).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.836988 + 0.35, abs=1e-5)
    with pytest.raises(ModelError, match="needs 2 output heads"):
        loss([head0], target, image([[0, 0, 0]]))


def test_neighbour_pairs_handle_image_boundary_without_wraparound() -> None:
    valid = torch.ones(1, 3, 3, dtype=torch.bool)
    count = sum(pair_mask(valid, dy, dx).long() for dy, dx in OFFSETS)
    # corners see 3 neighbours, edge pixels 5, the centre 8
    assert count[0].tolist() == [[3, 5, 3], [5, 8, 5], [3, 5, 3]]
    valid[0, 1, 1] = False  # a nodata centre: nobody pairs with it
    count = sum(pair_mask(valid, dy, dx).long() for dy, dx in OFFSETS)
    assert count[0].tolist() == [[2, 4, 2], [4, 0, 4], [2, 4, 2]]


def test_local_regularised_eq4_two_pixels() -> None:
    # pixels A (label 1, p1 0.75, x 0) and B (label 0, p1 0.5, x 1) are each other's only neighbour
    logits, target, x = logits_for([[0.75, 0.5]]), labels([[1, 0]]), image([[0.0, 1.0]])
    # sigma = mean over the 2 ordered pairs of (x_i - x_j)^2 = (1 + 1) / 2 = 1
    assert neighbour_sigma(x, target >= 0).item() == pytest.approx(1.0)
    nll = -math.log(0.75) - math.log(0.5)
    pdiff = (0.25 - 0.5) ** 2 + (0.75 - 0.5) ** 2  # = 0.125, the same for A->B and B->A
    smooth = 2 * pdiff * math.exp(-1.0 / 1.0)
    expected = (nll + 10 / 2 * smooth) / 2
    assert local_regularised_loss(logits, target, x, lam=10.0).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.720339, abs=1e-6)


def test_local_regularised_eq4_counts_diagonal_neighbours() -> None:
    # 2x2: every pixel neighbours the other three (two of them diagonal-or-straight); D = bottom-right
    logits = logits_for([[0.5, 0.5], [0.5, 0.75]])
    target = labels([[0, 0], [0, 0]])
    x = image([[0.0, 0.0], [0.0, 2.0]])
    # 12 ordered pairs, the 6 touching D have (x_i - x_j)^2 = 4: sigma = 6 * 4 / 12 = 2
    assert neighbour_sigma(x, target >= 0).item() == pytest.approx(2.0)
    nll = 3 * math.log(2.0) - math.log(0.25)  # three pixels at p0 = 0.5, D at p0 = 0.25
    smooth = 6 * 0.125 * math.exp(-4 / 2)  # only the 6 pairs touching D differ in probability
    expected = (nll + 10 / 2 * smooth) / 4
    assert local_regularised_loss(logits, target, x, lam=10.0).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.993311, abs=1e-6)


def test_local_regularised_eq4_excludes_nodata_everywhere() -> None:
    # a third pixel C with a wild colour and probability, but label -1: the result equals the 2-pixel case
    logits, x = logits_for([[0.75, 0.5, 0.25]]), image([[0.0, 1.0, 100.0]])
    with_nodata = local_regularised_loss(logits, labels([[1, 0, -1]]), x, lam=10.0).item()
    assert with_nodata == pytest.approx(0.720339, abs=1e-6)
    # a NaN colour on the nodata pixel (raw SAR nodata) is never read
    x_nan = image([[0.0, 1.0, math.nan]])
    assert local_regularised_loss(logits, labels([[1, 0, -1]]), x_nan, lam=10.0).item() == pytest.approx(
        with_nodata, abs=1e-12
    )
    # the same through the `valid` mask instead of the label
    valid = torch.tensor([[[True, True, False]]])
    assert local_regularised_loss(logits, labels([[1, 0, 1]]), x, valid, lam=10.0).item() == pytest.approx(
        with_nodata, abs=1e-12
    )


def test_edge_sets_from_8_neighbours() -> None:
    target = labels([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, -1]])
    e1, e0 = edge_sets(target, target >= 0)
    assert e1[0].nonzero().tolist() == [[0, 0]]
    # the class-0 pixels touching (0, 0), including the diagonal (1, 1); nodata (2, 3) is in neither set
    assert e0[0].nonzero().tolist() == [[0, 1], [1, 0], [1, 1]]


def test_structured_edge_eq5_two_edge_pixels() -> None:
    logits, target = logits_for([[0.75, 0.5]]), labels([[1, 0]])
    # A in E(1): ln p1_A + ln(1 - p1_B); B in E(0): ln(1 - p1_B) + ln p1_A
    total = 2 * (math.log(0.75) + math.log(0.5))
    assert structured_edge_loss(logits, target).item() == pytest.approx(-total / 2, abs=1e-9)


def test_structured_edge_eq5_averages_over_differing_neighbours() -> None:
    logits, target = logits_for([[0.25, 0.5, 0.5]]), labels([[0, 1, 0]])
    b = ((math.log(0.5) + math.log(0.75)) + (math.log(0.5) + math.log(0.5))) / 2  # SN_B sums to 2
    a = math.log(0.75) + math.log(0.5)
    c = math.log(0.5) + math.log(0.5)
    assert structured_edge_loss(logits, target).item() == pytest.approx(-(a + b + c) / 3, abs=1e-9)
    assert -(a + b + c) / 3 == pytest.approx(1.183562, abs=1e-6)


def test_structured_edge_eq5_non_edge_term_and_border() -> None:
    # all land, no edges: ln(1 - mean |p1_i - p1_j|) over the neighbours present (1 at the ends, 2 between)
    logits, target = logits_for([[0.75, 0.5, 0.5]]), labels([[0, 0, 0]])
    a = math.log(1 - 0.25 / 1)
    b = math.log(1 - (0.25 + 0.0) / 2)
    c = math.log(1 - 0.0 / 1)
    assert structured_edge_loss(logits, target).item() == pytest.approx(-(a + b + c) / 3, abs=1e-9)
    assert -(a + b + c) / 3 == pytest.approx(0.140404, abs=1e-6)


def test_structured_edge_eq5_mixed_and_nodata() -> None:
    # labels 1, 0, 0 and a nodata 4th pixel: A, B edges; C is not (its only valid neighbour B is class 0)
    logits = logits_for([[0.75, 0.5, 0.25, 0.75]])
    target = labels([[1, 0, 0, -1]])
    a = math.log(0.75) + math.log(0.5)
    b = math.log(0.5) + math.log(0.75)
    c = math.log(1 - abs(0.25 - 0.5) / 1)  # the nodata pixel is not a neighbour
    expected = -(a + b + c) / 3
    assert structured_edge_loss(logits, target).item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(0.749780, abs=1e-6)


def test_seg_edge_eq6_and_head_counts() -> None:
    head0 = logits_for([[0.75, 0.5]])
    head1 = logits_for([[0.75, 0.5]])
    x, target = image([[0.0, 1.0]]), labels([[1, 0]])
    # L_Seg(head0) = 0.720339 (above) + L_Edge(head1) = -(2 (ln 0.75 + ln 0.5)) / 2 = 0.980829
    expected = 0.720339 + 0.980829
    assert build_loss("seg_edge")([head0, head1], target, x).item() == pytest.approx(expected, abs=1e-5)
    assert [heads_for_loss(n) for n in LOSS_NAMES] == [1, 1, 2, 1, 1, 2]
    with pytest.raises(ModelError, match=r"loss.name='focal'"):
        build_loss("focal")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_backpropagates_finite_gradients_through_nodata(name: str) -> None:
    torch.manual_seed(0)
    heads = [torch.randn(2, 2, 7, 9, requires_grad=True) for _ in range(heads_for_loss(name))]
    target = torch.randint(0, 2, (2, 7, 9))
    target[0, :3] = -1
    valid = torch.ones(2, 7, 9, dtype=torch.bool)
    valid[1, :, :2] = False
    loss = build_loss(name)(heads, target, torch.randn(2, 3, 7, 9), valid)
    loss.backward()
    assert torch.isfinite(loss)
    for h in heads:
        assert h.grad is not None and torch.isfinite(h.grad).all()
        # nodata pixels receive no gradient from any term
        assert h.grad[0, :, :3].abs().max().item() == 0.0
        assert h.grad[1, :, :, :2].abs().max().item() == 0.0
