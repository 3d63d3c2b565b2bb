"""Reliable agent alignment module (RAAM, eq. 4-9) and its Tab. 5 alternatives, plus the eq. 10 predictor.

Choices where the paper is vague (each one explicit here):
- Projections are bias-free matrices, as eq. 4 writes them (W^Q: C_t->C_k, W^K: C->C_k, W^V: C->C_v).
- Eq. 7 writes corr^p with `f_m W^Q`, but W^Q maps text (C_t) and f_m is visual (C); the two only agree when
  C = C_t. We give pixels their own query matrix W^{Qp}: C->C_k (bias-free), so corr^p compares a pixel query
  with agent keys exactly like eq. 5 compares a word query with pixel keys.
- Eq. 5's `dis` is configurable; every variant is divided by sqrt(C_k) as eq. 5 writes. `scaled_dot` (default)
  is the dot product eq. 7 uses; `cosine` uses unit vectors; `neg_l2` is minus the squared distance (larger =
  closer, so top-K still means "most reliable"). corr^g and corr^p use the same `dis`.
- Eq. 6 sums corr over the real words only (padding tokens are masked out). Top-K ties go to the lower pixel
  index (a stable sort), so agent choice is deterministic. K larger than h*w selects every pixel.
- As eq. 4-7 are written, W^Q (word queries) only decides *which* pixels become agents (eq. 6 reliability ->
  hard top-K); the agents' features are then taken from K, so no gradient reaches W^Q and it keeps its initial
  values (a random projection that still ranks pixels by word similarity). We keep the paper's form; a soft or
  straight-through top-K would be the change if W^Q is meant to learn. DDP therefore needs
  find_unused_parameters (see rrsis/train/recipes.py).
- Eq. 9 sums align_m V_m over pixels with no extra normalisation, as written. The "general transformer
  pipeline" after it is the original post-LayerNorm one: LN(x + SelfAttn(x)), then LN(x + FFN(x)); with a
  single predictor token the self-attention is over that one token.
- X is the stage-4 feature F_4 of the language-aware encoder (its PWAM/gate are LAVT's "feature enhancement");
  V has C_v = decoder width so that eq. 10 is a dot product with the decoder's E.
- Tab. 5 `cross_attention`: L_g attends over all pixels, softmax(corr(Q^g, K)) V. `masked_attention`
  (Mask2Former): the same, restricted to pixels whose logit corr(Q^g, K_m) > 0 (the query's own mask
  prediction, sigmoid > 0.5); a query with an empty mask attends everywhere, as in Mask2Former.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def correlation(q: torch.Tensor, k: torch.Tensor, dis: str) -> torch.Tensor:
    """Eq. 5: (B, Lq, C_k) x (B, Lk, C_k) -> (B, Lq, Lk), dis(q, k) / sqrt(C_k)."""
    if dis == "scaled_dot":
        raw = q @ k.transpose(1, 2)
    elif dis == "cosine":
        raw = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2)
    elif dis == "neg_l2":
        raw = -torch.cdist(q, k).pow(2)
    else:
        raise ValueError(f"unknown distance {dis!r}")
    return raw / math.sqrt(q.shape[-1])


def reliability(corr: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 6: r_m = sum over real words n of corr_{n,m}; (B, L, N) -> (B, N)."""
    return (corr * word_mask.to(corr.dtype)[:, :, None]).sum(dim=1)


def select_agents(rel: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, K) of the K most reliable pixels; ties go to the lower index (stable descending sort)."""
    order = torch.sort(rel, dim=-1, descending=True, stable=True).indices
    return order[:, : min(k, rel.shape[-1])]


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), index (B, K) -> (B, K, C)."""
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def agent_align(corr_g: torch.Tensor, corr_p: torch.Tensor) -> torch.Tensor:
    """Eq. 8: align_m = corr^g (corr^p_m)^T; (B, 1, K) and (B, N, K) -> (B, 1, N)."""
    return corr_g @ corr_p.transpose(1, 2)


def predict(e: torch.Tensor, predictor: torch.Tensor) -> torch.Tensor:
    """Eq. 10: Y = E L̂_g^T; E (B, C, h, w), L̂_g (B, C) -> logits (B, 1, h, w)."""
    return torch.einsum("bchw,bc->bhw", e, predictor)[:, None]


class ReliableAgentAlignment(nn.Module):
    """Turns the [CLS] feature L_g into a predictor L̂_g (B, C_v) aligned with X through reliable agents."""

    def __init__(
        self,
        vis_dim: int,
        text_dim: int,
        key_dim: int,
        value_dim: int,
        k: int = 32,
        dis: str = "scaled_dot",
        mode: str = "raam",
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("raam", "cross_attention", "masked_attention"):
            raise ValueError(f"unknown agent mode {mode!r}")
        self.k, self.dis, self.mode = k, dis, mode
        self.w_qg = nn.Linear(text_dim, key_dim, bias=False)  # W^{Qg}
        self.w_k = nn.Linear(vis_dim, key_dim, bias=False)  # W^K
        self.w_v = nn.Linear(vis_dim, value_dim, bias=False)  # W^V
        if mode == "raam":  # only the agent variant needs word and pixel queries
            self.w_q = nn.Linear(text_dim, key_dim, bias=False)  # W^Q
            self.w_qp = nn.Linear(vis_dim, key_dim, bias=False)  # W^{Qp}, see module docstring
        self.self_attn = nn.MultiheadAttention(value_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(value_dim)
        self.ffn = nn.Sequential(
            nn.Linear(value_dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, value_dim)
        )
        self.norm2 = nn.LayerNorm(value_dim)
        self.drop = nn.Dropout(dropout)

    def aggregation(
        self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, sentence: torch.Tensor
    ) -> torch.Tensor:
        """Weights (B, 1, N) over pixels that blend V into L̂_g (eq. 8 for raam, attention for Tab. 5)."""
        keys = self.w_k(x)  # (B, N, C_k)
        q_g = self.w_qg(sentence)[:, None]  # (B, 1, C_k)
        if self.mode == "raam":
            rel = reliability(correlation(self.w_q(words), keys, self.dis), word_mask)  # eq. 4-6
            agent_keys = gather_rows(keys, select_agents(rel, self.k))  # (F^A W^K): (B, K, C_k)
            corr_g = correlation(q_g, agent_keys, self.dis).softmax(dim=-1)  # eq. 7: (B, 1, K)
            corr_p = correlation(self.w_qp(x), agent_keys, self.dis).softmax(dim=-1)  # eq. 7: (B, N, K)
            return agent_align(corr_g, corr_p)  # eq. 8
        logits = correlation(q_g, keys, self.dis)  # (B, 1, N)
        if self.mode == "masked_attention":
            keep = logits.detach() > 0
            keep = keep | ~keep.any(dim=-1, keepdim=True)
            logits = logits.masked_fill(~keep, float("-inf"))
        return logits.softmax(dim=-1)

    def forward(
        self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor, sentence: torch.Tensor
    ) -> torch.Tensor:
        """x: X (B, N, C); words: L_c (B, L, C_t); word_mask (B, L); sentence: L_g (B, C_t) -> L̂_g (B, C_v)."""
        h = self.aggregation(x, words, word_mask, sentence) @ self.w_v(x)  # eq. 9: (B, 1, C_v)
        h = self.norm1(h + self.drop(self.self_attn(h, h, h, need_weights=False)[0]))
        h = self.norm2(h + self.drop(self.ffn(h)))
        return h[:, 0]
