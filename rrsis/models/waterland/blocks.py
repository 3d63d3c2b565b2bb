"""Building blocks shared by the three water-land trunks: conv-BN-ReLU, channel LayerNorm, stride padding.

Every trunk is assembled from these by width arithmetic, so full and half variants share one code path.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNAct(nn.Sequential):
    """A 'same' convolution, BatchNorm and (optionally) ReLU: the unit layer of Table I's channel lists."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two ConvBNAct layers, the classic U-Net level (used by MU-Net's encoder and decoder)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNAct(in_channels, out_channels), ConvBNAct(out_channels, out_channels))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) map, as transformer blocks expect."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Trunk(nn.Module):
    """A feature extractor: (B, in_bands, H, W) with H, W multiples of `stride` -> (B, out_channels, H, W).

    `stride` is the multiple `WaterlandNet` pads the input to (the trunk's exact downsampling factor for
    SeNet and MU-Net; 16 for DeepUNet, whose deeper levels use ceil-mode pooling).
    """

    stride: int = 1
    out_channels: int = 0


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of (B, C, H, W) so H and W divide `multiple` (crop back with [:H, :W]).

    Replicate (not reflect) padding works for any size, even a 1x1 input padded to a stride of 128.
    """
    h, w = x.shape[-2:]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear upsampling of `x` to the spatial size of `like` (MU-Net and DeepUNet decoders)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (printed by the tests and the benchmark)."""
    return sum(int(p.numel()) for p in module.parameters() if p.requires_grad)
