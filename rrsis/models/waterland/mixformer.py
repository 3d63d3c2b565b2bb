"""MixFormer block (Chen et al., CVPR 2022) on (B, C, H, W) maps, as embedded in MU-Net's encoder.

Choices, from MixFormer's public description:
- Two parallel branches on half the channels each: local-window multi-head self-attention, and a depth-wise
  3x3 convolution. Their outputs are concatenated and projected back to C, with a residual connection.
- Bidirectional interactions: a channel interaction (global-pooled conv branch -> sigmoid weights on the
  attention values V) and a spatial interaction (attention output -> 1-channel sigmoid map on the conv branch).
- A channel LayerNorm before each part and an MLP (ratio 4) with a second residual, as in MixFormer.
- Windows are `window` px squares, shrunk to the map when it is smaller; the map is zero-padded (after the
  norm) to a multiple of the window and cropped back, without an attention mask (as Swin's unshifted windows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.models.waterland.blocks import ChannelLayerNorm


def _windows(x: Tensor, heads: int, wh: int, ww: int) -> Tensor:
    """(B, C, H, W) with H % wh == W % ww == 0 -> (B * nWin, heads, wh * ww, C // heads)."""
    b, c, h, w = x.shape
    x = x.reshape(b, heads, c // heads, h // wh, wh, w // ww, ww)
    x = x.permute(0, 3, 5, 1, 4, 6, 2)  # B, nH, nW, heads, wh, ww, hd
    return x.reshape(-1, heads, wh * ww, c // heads)


def _unwindows(x: Tensor, b: int, h: int, w: int, wh: int, ww: int) -> Tensor:
    """Inverse of `_windows`: (B * nWin, heads, wh * ww, hd) -> (B, heads * hd, H, W)."""
    heads, hd = x.shape[1], x.shape[3]
    x = x.reshape(b, h // wh, w // ww, heads, wh, ww, hd)
    x = x.permute(0, 3, 6, 1, 4, 2, 5)  # B, heads, hd, nH, wh, nW, ww
    return x.reshape(b, heads * hd, h, w)


class MixFormerBlock(nn.Module):
    """Window attention || depth-wise conv with channel/spatial interactions, then an MLP; shape-preserving."""

    def __init__(self, dim: int, window: int = 8, head_dim: int = 32, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"MixFormerBlock needs an even channel count, got {dim}")
        half = dim // 2
        self.window = window
        self.heads = max(1, half // head_dim)
        if half % self.heads:
            raise ValueError(f"MixFormerBlock: {half} attention channels do not split into {self.heads} heads")
        self.norm1 = ChannelLayerNorm(dim)
        self.qkv = nn.Conv2d(dim, 3 * half, 1)
        self.conv_in = nn.Conv2d(dim, half, 1)
        self.dwconv = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, groups=half), nn.BatchNorm2d(half), nn.GELU())
        squeeze = max(half // 8, 4)
        self.channel_interaction = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(half, squeeze, 1), nn.GELU(), nn.Conv2d(squeeze, half, 1), nn.Sigmoid()
        )
        self.spatial_interaction = nn.Sequential(
            nn.Conv2d(half, squeeze, 1), nn.BatchNorm2d(squeeze), nn.GELU(), nn.Conv2d(squeeze, 1, 1), nn.Sigmoid()
        )
        self.proj = nn.Conv2d(2 * half, dim, 1)
        hidden = int(dim * mlp_ratio)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def _attention(self, x: Tensor, value_scale: Tensor) -> Tensor:
        b, _, h, w = x.shape
        wh, ww = min(self.window, h), min(self.window, w)
        pad_h, pad_w = (-h) % wh, (-w) % ww
        q, k, v = self.qkv(x).chunk(3, dim=1)
        v = v * value_scale
        if pad_h or pad_w:
            q, k, v = (F.pad(t, (0, pad_w, 0, pad_h)) for t in (q, k, v))
        hp, wp = h + pad_h, w + pad_w
        qw, kw, vw = (_windows(t, self.heads, wh, ww) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qw, kw, vw)
        return _unwindows(out, b, hp, wp, wh, ww)[..., :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        local = self.dwconv(self.conv_in(y))
        attended = self._attention(y, self.channel_interaction(local))
        local = local * self.spatial_interaction(attended)
        x = x + self.proj(torch.cat([attended, local], dim=1))
        return x + self.mlp(self.norm2(x))
