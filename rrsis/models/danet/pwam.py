"""LAVT's pixel-word attention module (PWAM) and language gate: how words enter each Swin stage.

Each pixel attends over the words of the expression; the attended language feature multiplies the pixel's own
projection (element-wise), and a tanh gate decides how much of that multi-modal feature joins the residual
stream. The PWAM's query/key projections also give EAAS its text-to-visual activation (see `eaas.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PixelWordAttention(nn.Module):
    """PWAM: (B, N, C) pixels and (B, L, C_t) words -> (B, N, C) multi-modal features."""

    def __init__(self, vis_dim: int, text_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.key_dim = vis_dim
        self.vis_project = nn.Sequential(nn.Linear(vis_dim, vis_dim), nn.GELU(), nn.Dropout(dropout))
        self.query = nn.Linear(vis_dim, self.key_dim)  # pixels -> shared key space
        self.key = nn.Linear(text_dim, self.key_dim)  # words -> shared key space
        self.value = nn.Linear(text_dim, vis_dim)
        self.out = nn.Sequential(nn.Linear(vis_dim, vis_dim), nn.LayerNorm(vis_dim))
        self.mm_project = nn.Sequential(nn.Linear(vis_dim, vis_dim), nn.GELU(), nn.Dropout(dropout))

    def forward(self, pixels: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        logits = self.query(pixels) @ self.key(words).transpose(1, 2) / math.sqrt(self.key_dim)  # (B, N, L)
        logits = logits.masked_fill(~word_mask.bool()[:, None, :], float("-inf"))
        lang = self.out(logits.softmax(dim=-1) @ self.value(words))
        return self.mm_project(self.vis_project(pixels) * lang)

    def sentence_activation(self, pixels: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """Logit of each pixel towards one sentence vector in this PWAM's key space: (B, N)."""
        return (self.query(pixels) * self.key(sentence)[:, None, :]).sum(-1) / math.sqrt(self.key_dim)


class LanguageGate(nn.Module):
    """x + tanh-gated multi-modal feature (LAVT's language pathway); the gate is per pixel and channel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Tanh()
        )

    def forward(self, pixels: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        return pixels + self.gate(fused) * fused
