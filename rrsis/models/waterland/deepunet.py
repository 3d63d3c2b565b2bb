"""DeepUNet trunk (Li et al. 2018, "DeepUNet: a deep fully convolutional network for sea-land segmentation").

Choices, following the paper's description and Table I ([in, (c, 2c) x7, (2c, c) x7, ...], c = 32 full / 16 half):
- A stem conv maps the input bands to c channels.
- DownBlock: conv c->2c, ReLU, conv 2c->c, then the "plus" layer adds the block input (residual), ReLU. The
  plus output is kept as the skip, then 2x2 max-pooling. Seven DownBlocks: a 2^7 = 128 px input reaches 1x1.
- Pooling uses ceil mode and every UpBlock upsamples to its skip's exact size, so the net accepts any size;
  `WaterlandNet` pads only to a multiple of 16 (exact halvings for the first four levels), not 128, which
  would make a 64 px training crop cost four times as much.
- UpBlock: bilinear x2 upsampling, concatenation with the matching skip (c + c = 2c), conv 2c->c, ReLU, conv
  c->c, plus the upsampled input, ReLU. Seven UpBlocks mirror the DownBlocks.
- BatchNorm after every conv (DeepUNet's paper predates our use; it makes the small-batch training stable),
  with the last BN scale of each residual pair initialised to 0 so every block starts as the identity.
- Table I lists the output layer's input as 32 for both widths; we halve it with everything else (c), so the
  output heads of the half variant read 16 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.models.waterland.blocks import ConvBNAct, Trunk, upsample_to

DEPTH = 7


class ResidualPair(nn.Module):
    """conv in->mid, conv mid->out, added to `shortcut` (the DeepUNet "plus" layer), then ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        first = ConvBNAct(in_channels, mid_channels)
        last = ConvBNAct(mid_channels, out_channels, act=False)
        self.body = nn.Sequential(first, last)
        # Start each block as the identity (last BN scale 0): fourteen stacked "plus" layers otherwise blow
        # up the initial activations and logits (an initial cross-entropy of ~10 instead of ~0.7).
        for module in last.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.zeros_(module.weight)

    def forward(self, x: Tensor, shortcut: Tensor) -> Tensor:
        return F.relu(self.body(x) + shortcut)


class DeepUNetTrunk(Trunk):
    """Stem, seven residual DownBlocks, seven residual UpBlocks; c-channel features at input resolution."""

    stride = 16  # the input multiple we pad to; deeper pools are ceil-mode (see module docstring)

    def __init__(self, in_bands: int, base: int) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_bands, base)
        self.down = nn.ModuleList(ResidualPair(base, 2 * base, base) for _ in range(DEPTH))
        self.up = nn.ModuleList(ResidualPair(2 * base, base, base) for _ in range(DEPTH))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.out_channels = base

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        skips: list[Tensor] = []
        for block in self.down:
            x = block(x, x)
            skips.append(x)
            x = self.pool(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            up = upsample_to(x, skip)
            x = block(torch.cat([up, skip], dim=1), up)
        return x
