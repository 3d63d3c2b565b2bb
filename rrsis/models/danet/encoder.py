"""LAVT's language-aware visual encoder: Swin stages with a PWAM + language gate after each stage's blocks."""

from __future__ import annotations

import torch
from torch import nn

from rrsis.models.danet.backbone import SwinBackbone
from rrsis.models.danet.pwam import LanguageGate, PixelWordAttention


class StageFeatures:
    """The enriched feature F_i of each stage, flattened (B, h_i*w_i, C_i), with its grid size."""

    def __init__(self) -> None:
        self.tokens: list[torch.Tensor] = []
        self.sizes: list[tuple[int, int]] = []

    def append(self, tokens: torch.Tensor, hw: tuple[int, int]) -> None:
        self.tokens.append(tokens)
        self.sizes.append(hw)

    def map(self, i: int) -> torch.Tensor:
        """Stage i (0-based) as an image-shaped tensor (B, C_i, h_i, w_i) for the decoder."""
        tokens, (h, w) = self.tokens[i], self.sizes[i]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class LanguageAwareEncoder(nn.Module):
    """F_i = LayerNorm(x + gate(PWAM(x, L_c)) * PWAM(x, L_c)) where x is stage i's block output.

    Following LAVT, the gated feature continues into the next stage (through patch merging) and its normalised
    copy F_i goes to the decoder, to EAAS (eq. 1) and, for stage 4, to RAAM as X.
    """

    def __init__(self, backbone: SwinBackbone, text_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        dims = backbone.dims
        self.pwams = nn.ModuleList(PixelWordAttention(d, text_dim, dropout) for d in dims)
        self.gates = nn.ModuleList(LanguageGate(d) for d in dims)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)

    @property
    def dims(self) -> list[int]:
        return self.backbone.dims

    def forward(self, pixels: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> StageFeatures:
        tokens, hw = self.backbone.embed(pixels)
        out = StageFeatures()
        for i in range(len(self.dims)):
            tokens = self.backbone.blocks(i, tokens, hw)
            tokens = self.gates[i](tokens, self.pwams[i](tokens, words, word_mask))
            out.append(self.norms[i](tokens), hw)
            tokens, hw = self.backbone.downsample(i, tokens, hw)
        return out
