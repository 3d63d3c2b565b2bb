"""Hand-computed checks of DANet's equations (eq. 1-3 EAAS, eq. 5-9 RAAM, eq. 10 predictor)."""

from __future__ import annotations

import math

import pytest
import torch

from rrsis.losses.danet import affinity_loss, danet_loss, masked_bce, self_affinity
from rrsis.models.danet.eaas import hard_labels, normalise_activation, text_to_visual_labels
from rrsis.models.danet.pwam import PixelWordAttention
from rrsis.models.danet.raam import (
    ReliableAgentAlignment,
    correlation,
    predict,
    reliability,
    select_agents,
)

# A 3-pixel, 2-channel feature map F̃ used by eq. 1 and eq. 3.
F3 = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
E = math.exp


def _eq1_of_f3() -> torch.Tensor:
    # ||F̃||_F^2 = 1 + 1 + 2 = 4; F̃ F̃^T = [[1,0,1],[0,1,1],[1,1,2]]; logits = that / 4.
    row0 = [E(0.25), E(0.0), E(0.25)]
    row1 = [E(0.0), E(0.25), E(0.25)]
    row2 = [E(0.25), E(0.25), E(0.5)]
    return torch.tensor([[v / sum(r) for v in r] for r in (row0, row1, row2)])


def test_eq1_self_affinity_by_hand() -> None:
    expected = _eq1_of_f3()
    assert expected[0, 0].item() == pytest.approx(E(0.25) / (2 * E(0.25) + 1))  # 0.35987
    torch.testing.assert_close(self_affinity(F3)[0], expected)


def test_eq1_cosine_reading() -> None:
    # ||f_0|| = ||f_1|| = 1, ||f_2|| = sqrt2: cos = [[1, 0, 1/sqrt2], [0, 1, 1/sqrt2], [1/sqrt2, 1/sqrt2, 1]]
    r = 1 / math.sqrt(2)
    rows = [[E(1), E(0), E(r)], [E(0), E(1), E(r)], [E(r), E(r), E(1)]]
    expected = torch.tensor([[v / sum(row) for v in row] for row in rows])
    torch.testing.assert_close(self_affinity(F3, norm="cosine")[0], expected)


def test_eq1_of_binary_labels_and_empty_labels() -> None:
    # Â = [1, 0, 1]: Â Â^T = [[1,0,1],[0,0,0],[1,0,1]], ||Â||^2 = 2 -> logits [[.5,0,.5],[0,0,0],[.5,0,.5]].
    s = self_affinity(torch.tensor([[[1.0], [0.0], [1.0]]]))[0]
    top = [E(0.5) / (2 * E(0.5) + 1), 1 / (2 * E(0.5) + 1), E(0.5) / (2 * E(0.5) + 1)]
    torch.testing.assert_close(s, torch.tensor([top, [1 / 3] * 3, top]))
    # No pseudo-foreground at all: zero logits, uniform rows (no NaN from 0/0).
    torch.testing.assert_close(self_affinity(torch.zeros(1, 4, 1))[0], torch.full((4, 4), 0.25))


def test_eq2_threshold_is_strict_and_normalisation_is_min_max() -> None:
    assert hard_labels(torch.tensor([0.9, 0.8, 0.81, 0.2]), 0.8).tolist() == [1.0, 0.0, 1.0, 0.0]
    # (x - 2) / (10 - 2) for x = 2, 6, 4, 10
    assert normalise_activation(torch.tensor([[2.0, 6.0, 4.0, 10.0]])).tolist() == [[0.0, 0.5, 0.25, 1.0]]


def test_eq2_text_to_visual_labels_reuse_pwam_projections() -> None:
    pwam = PixelWordAttention(vis_dim=2, text_dim=2)
    with torch.no_grad():
        for layer in (pwam.query, pwam.key):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    sentence = torch.tensor([[2.0, 1.0]])
    # logits = F·L_g / sqrt(2) = [2, 1, 3, 0] / sqrt(2); min-max -> [2/3, 1/3, 1, 0]
    assert text_to_visual_labels(pwam, feats, sentence, alpha=0.5).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert text_to_visual_labels(pwam, feats, sentence, alpha=0.8).tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_eq3_affinity_loss_by_hand() -> None:
    a_f = _eq1_of_f3()
    top = [E(0.5) / (2 * E(0.5) + 1), 1 / (2 * E(0.5) + 1), E(0.5) / (2 * E(0.5) + 1)]
    s = [top, [1 / 3] * 3, top]  # Self-Affinity(Â_tv) for Â_tv = [1, 0, 1], from the test above
    # ||A_F ⊙ S - S||_F^2 = sum over the 9 entries of (A_F[i][j] * S[i][j] - S[i][j])^2
    expected = sum((a_f[i, j].item() * s[i][j] - s[i][j]) ** 2 for i in range(3) for j in range(3))
    got = affinity_loss(F3, torch.tensor([[1.0, 0.0, 1.0]]))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    total = danet_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 2, 2), [F3], [torch.tensor([[1.0, 0.0, 1.0]])], 0.5)
    # BCE of logit 0 against 1 is ln 2; total = ln 2 + 0.5 * expected
    assert total.total.item() == pytest.approx(math.log(2) + 0.5 * expected, rel=1e-6)


def test_bce_ignores_nodata_targets() -> None:
    logits = torch.tensor([[[[0.0, 100.0]]]])
    # pixel 2 is -1 (nodata): only pixel 1 (logit 0, target 1) counts -> ln 2
    assert masked_bce(logits, torch.tensor([[[1.0, -1.0]]])).item() == pytest.approx(math.log(2))


def test_eq5_distances() -> None:
    q, k = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[3.0, 4.0], [1.0, 2.0]]])
    s2 = math.sqrt(2)
    torch.testing.assert_close(correlation(q, k, "scaled_dot")[0, 0], torch.tensor([11 / s2, 5 / s2]))
    torch.testing.assert_close(correlation(q, k, "cosine")[0, 0], torch.tensor([11 / (5 * math.sqrt(5)) / s2, 1 / s2]))
    torch.testing.assert_close(correlation(q, k, "neg_l2")[0, 0], torch.tensor([-8 / s2, 0.0]))


def test_eq6_reliability_skips_padding_and_topk_ties_are_deterministic() -> None:
    corr = torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [100.0, 100.0, 100.0]]])  # word 3 is padding
    torch.testing.assert_close(reliability(corr, torch.tensor([[1, 1, 0]])), torch.tensor([[1.5, 2.5, 3.5]]))
    rel = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]])
    # ties go to the lower pixel index: 0.9 at 1 and 3, then 0.5 at 0 (before 2); all-equal -> 0, 1, 2
    assert select_agents(rel, 3).tolist() == [[1, 3, 0], [0, 1, 2]]
    assert select_agents(rel, 99).shape == (2, 5)  # K > h*w selects every pixel
    for _ in range(3):  # same answer every call
        assert select_agents(rel, 3).tolist() == [[1, 3, 0], [0, 1, 2]]


def _identity_raam(mode: str = "raam") -> ReliableAgentAlignment:
    raam = ReliableAgentAlignment(2, 2, 2, 2, k=2, mode=mode, num_heads=1, ffn_dim=4)
    with torch.no_grad():
        for name in ("w_q", "w_k", "w_v", "w_qg", "w_qp"):
            if hasattr(raam, name):
                getattr(raam, name).weight.copy_(torch.eye(2))
    return raam


def test_eq7_to_9_small_numeric_case() -> None:
    raam = _identity_raam()
    x = F3  # pixels f_0 = [1,0], f_1 = [0,1], f_2 = [1,1]
    words, mask, sentence = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[1]]), torch.tensor([[0.0, 1.0]])
    # eq. 5/6: corr = [1, 0, 1]/sqrt2 -> r = [.707, 0, .707]; K=2, tie -> agents (0, 2): F^A = [[1,0],[1,1]]
    # eq. 7: corr^g = softmax([0, 1]/sqrt2) = [1, c]/(1+c) with c = e^{1/sqrt2}
    c = E(1 / math.sqrt(2))
    g0, g1 = 1 / (1 + c), c / (1 + c)
    # corr^p: f_0 -> softmax([1,1]/sqrt2) = [.5,.5]; f_1 -> softmax([0,1]/sqrt2) = [g0,g1];
    #         f_2 -> softmax([1,2]/sqrt2) = [g0,g1] (shift-invariant)
    # eq. 8: align = [.5*g0 + .5*g1, g0^2 + g1^2, g0^2 + g1^2] = [.5, s, s]
    s = g0**2 + g1**2
    align = raam.aggregation(x, words, mask, sentence)
    assert align.shape == (1, 1, 3)
    torch.testing.assert_close(align[0, 0], torch.tensor([0.5, s, s]))
    # eq. 9: L̂_g = .5*[1,0] + s*[0,1] + s*[1,1] = [.5 + s, 2s]
    torch.testing.assert_close((align @ raam.w_v(x))[0, 0], torch.tensor([0.5 + s, 2 * s]))


def test_eq7_to_9_shapes_and_table5_modes() -> None:
    b, n, length, c, ct, ck, cv = 2, 12, 5, 6, 5, 4, 8
    x, words, sentence = torch.randn(b, n, c), torch.randn(b, length, ct), torch.randn(b, ct)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for mode in ("raam", "cross_attention", "masked_attention"):
        raam = ReliableAgentAlignment(c, ct, ck, cv, k=4, mode=mode, num_heads=2, ffn_dim=16)
        weights = raam.aggregation(x, words, mask, sentence)
        assert weights.shape == (b, 1, n)
        assert raam(x, words, mask, sentence).shape == (b, cv)
        if mode != "raam":  # plain attention weights are a distribution over pixels
            torch.testing.assert_close(weights.sum(-1), torch.ones(b, 1))


def test_masked_attention_restricts_to_positive_logits() -> None:
    raam = _identity_raam("masked_attention")
    x = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]]])
    w = raam.aggregation(x, torch.zeros(1, 1, 2), torch.ones(1, 1), torch.tensor([[1.0, 0.0]]))
    # logits [1, -1, 2]/sqrt2: pixel 1 is masked out; softmax over pixels 0 and 2
    a, bb = E(1 / math.sqrt(2)), E(2 / math.sqrt(2))
    torch.testing.assert_close(w[0, 0], torch.tensor([a / (a + bb), 0.0, bb / (a + bb)]))


def test_eq10_prediction_by_hand() -> None:
    e = torch.tensor([[[[1.0, 3.0]], [[2.0, -1.0]]]])  # E (1, C=2, 1, 2): pixels [1,2] and [3,-1]
    lhat = torch.tensor([[0.5, 2.0]])
    # Y = E L̂^T: [1*.5 + 2*2, 3*.5 - 1*2] = [4.5, -0.5]
    assert predict(e, lhat).tolist() == [[[[4.5, -0.5]]]]
