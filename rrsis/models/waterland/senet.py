"""SeNet trunk (Cheng et al. 2017, "SeNet: Structured Edge Network for sea-land segmentation").

Choices, read off the water/land paper's Table I and SeNet's own description:
- SeNet is a DeconvNet/SegNet-style encoder-decoder: max-pooling with indices on the way down and max-unpooling
  on the way up, *no* concatenated skips. That is the only layout that reproduces Table I's layer-input widths
  exactly: [in, c, 2c x2, 4c x7, 2c x2, c x2] with c = 32 (full) or 16 (half), i.e. 14 conv layers plus the
  output layer(s), whose input is the last `c` entry.
- Three pooling steps (stride 8): convs at full, 1/2, 1/4 resolution in the encoder, two at 1/8, and mirrored.
- Every conv is 3x3 + BatchNorm + ReLU. The segmentation and edge outputs are separate 1x1 heads added by
  `WaterlandNet` (the paper: "branching at the final layer").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rrsis.models.waterland.blocks import ConvBNAct, Trunk

# Width multipliers (of c) of each conv, per resolution stage. Pools follow each encoder stage; an unpool
# precedes each decoder stage. Inputs then read [in, c, 2c, 2c, 4c*7, 2c, 2c, c] + the head's c, as Table I.
ENCODER_STAGES: tuple[tuple[int, ...], ...] = ((1,), (2, 2), (4, 4, 4))
BOTTOM_STAGE: tuple[int, ...] = (4, 4)
DECODER_STAGES: tuple[tuple[int, ...], ...] = ((4, 4, 2), (2, 1), (1,))


def _stage(in_channels: int, multipliers: tuple[int, ...], base: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    channels = in_channels
    for m in multipliers:
        layers.append(ConvBNAct(channels, m * base))
        channels = m * base
    return nn.Sequential(*layers), channels


class SeNetTrunk(Trunk):
    """Pool-with-indices encoder, unpool decoder; returns c-channel features at input resolution."""

    stride = 2 ** len(ENCODER_STAGES)

    def __init__(self, in_bands: int, base: int) -> None:
        super().__init__()
        self.encoder = nn.ModuleList()
        channels = in_bands
        for mults in ENCODER_STAGES:
            stage, channels = _stage(channels, mults, base)
            self.encoder.append(stage)
        self.bottom, channels = _stage(channels, BOTTOM_STAGE, base)
        self.decoder = nn.ModuleList()
        for mults in DECODER_STAGES:
            stage, channels = _stage(channels, mults, base)
            self.decoder.append(stage)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        # only the pooling indices and the size before each pool are kept for the way up, not the activation
        # itself: a kept full-resolution map was ~35 MB of an inference actor's peak at 512 px (half width)
        indices: list[tuple[Tensor, torch.Size]] = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            indices.append((idx, size))
        x = self.bottom(x)
        for stage, (idx, size) in zip(self.decoder, reversed(indices), strict=True):
            x = self.unpool(x, idx, output_size=size)
            x = stage(x)
        return x
