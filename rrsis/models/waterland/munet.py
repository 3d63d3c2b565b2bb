"""MU-Net trunk (Zhang et al. 2023, "MU-Net: Embedding MixFormer into Unet to extract water bodies").

Choices, from the water/land paper's summary and MU-Net's public description (widths of Table I:
[in, c, 2c, 4c, 8c, 16c, 8c, 4c, 2c, c] with c = 64 full / 32 half):
- Five encoder levels joined by 2x2 max-pooling (stride 16); each level is a double 3x3 conv (local features).
- A MixFormer block follows the convs of the two deepest levels (1/8 and 1/16), where global context is
  cheapest to model (window attention on the shallow, large maps would dominate the cost).
- The Attention Mechanism Module (AMM) refines every encoder output before the decoder uses it: CBAM-style
  channel attention (shared MLP on avg- and max-pooled features) then spatial attention (7x7 conv on the
  channel mean/max), which suppresses non-water responses.
- Decoder: bilinear x2 upsampling, concatenation with the AMM-refined skip, double conv down to the level width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rrsis.models.waterland.blocks import DoubleConv, Trunk, upsample_to
from rrsis.models.waterland.mixformer import MixFormerBlock

LEVELS = 5
MIXFORMER_LEVELS = (3, 4)


class AttentionModule(nn.Module):
    """AMM: channel attention then spatial attention, both as sigmoid gates on the input."""

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(pooled)
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(stats))


class EncoderLevel(nn.Sequential):
    """Double conv, followed by a MixFormer block at the deep levels."""

    def __init__(self, in_channels: int, out_channels: int, mixformer: bool) -> None:
        layers: list[nn.Module] = [DoubleConv(in_channels, out_channels)]
        if mixformer:
            layers.append(MixFormerBlock(out_channels))
        super().__init__(*layers)


class MUNetTrunk(Trunk):
    """U-Net with MixFormer-augmented deep levels and AMM-refined skips; c-channel features at input size."""

    stride = 2 ** (LEVELS - 1)

    def __init__(self, in_bands: int, base: int) -> None:
        super().__init__()
        widths = [base * 2**k for k in range(LEVELS)]
        inputs = [in_bands, *widths[:-1]]
        pairs = enumerate(zip(inputs, widths, strict=True))
        self.encoder = nn.ModuleList(EncoderLevel(cin, cout, k in MIXFORMER_LEVELS) for k, (cin, cout) in pairs)
        self.amm = nn.ModuleList(AttentionModule(w) for w in widths)
        self.decoder = nn.ModuleList(DoubleConv(widths[k + 1] + widths[k], widths[k]) for k in range(LEVELS - 1))
        self.pool = nn.MaxPool2d(2)
        self.out_channels = base

    def forward(self, x: Tensor) -> Tensor:
        refined: list[Tensor] = []  # each level's skip, refined as soon as it exists: no raw copy is kept
        for k, (level, amm) in enumerate(zip(self.encoder, self.amm, strict=True)):
            x = level(x if k == 0 else self.pool(x))
            refined.append(amm(x))
        x = refined[-1]
        for k in reversed(range(LEVELS - 1)):
            x = self.decoder[k](torch.cat([upsample_to(x, refined[k]), refined[k]], dim=1))
        return x
