"""LAVT's upsampling decoder: from F_4 up to the 1/4-resolution features E, fusing F_3, F_2, F_1 on the way."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class UpsamplingDecoder(nn.Module):
    """E = fuse(up(fuse(up(fuse(up(F_4), F_3)), F_2)), F_1), each fuse two 3x3 conv-BN-ReLU, width `hidden`."""

    def __init__(self, dims: list[int], hidden: int) -> None:
        super().__init__()
        inputs = [dims[3] + dims[2], hidden + dims[1], hidden + dims[0]]
        self.fuse = nn.ModuleList(
            nn.Sequential(*_conv_bn_relu(c, hidden), *_conv_bn_relu(hidden, hidden)) for c in inputs
        )
        self.dim = hidden

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """`maps` = [F_1, F_2, F_3, F_4] as (B, C_i, h_i, w_i); returns E (B, hidden, h_1, w_1)."""
        x = maps[3]
        for fuse, skip in zip(self.fuse, (maps[2], maps[1], maps[0]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = fuse(torch.cat([x, skip], dim=1))
        return x


class FixedKernelHead(nn.Module):
    """LAVT's semantics-agnostic predictor: one fixed 1x1 kernel over E (what RAAM + eq. 10 replace)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, 1, 1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.conv(e)
