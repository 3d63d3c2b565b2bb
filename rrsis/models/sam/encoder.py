"""SAM's ViT image encoder with memory-bounded attention; loads the official weights unchanged.

The architecture and parameter names are those of `segment_anything.modeling.ImageEncoderViT` (a ViTDet
backbone: patch embedding, absolute position embedding, windowed blocks with a few global ones, decomposed
relative-position bias, conv neck), so an official vit_b/l/h state dict loads key for key and a seeded
random init draws the same numbers. What differs is the attention: segment-anything materialises the
attention logits of every head at once, then a biased copy, then the softmax (three (B*heads, N, N) float
tensors; at 1024 px a global block of vit_b holds 12 x 4096 x 4096 logits, 0.8 GB each). Here the
relative-position bias is built as an additive float `attn_mask` for
`torch.nn.functional.scaled_dot_product_attention`, one group of heads and query rows at a time, so at most
`mask_budget` bias elements exist at once and the fused kernel never writes the full attention out.
Each block also runs its MLP over `TOKEN_CHUNK` tokens at a time and its windowed attention over as many
whole windows at a time (per-token and per-window computations: same results, smaller peak).

Facts carried over from segment-anything: the softmax scale is head_dim**-0.5 and applies to q.k only; the
bias uses the unscaled queries, bias[q, k] = q . R_h[row(q) - row(k)] + q . R_w[col(q) - col(k)]; windowed
blocks zero-pad the normalised tokens on the bottom/right to a multiple of the window, and the padded tokens
take part in the attention as keys; LayerNorm eps is 1e-6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rrsis.models.sam.modeling import LayerNorm2d, MLPBlock

DEFAULT_MASK_BUDGET = 1 << 22  # bias elements alive at once (16 MB in fp32); one 1024 px vit_b head needs 2**24
# tokens per MLP call and per windowed-attention call (whole windows): every token's MLP and every window's
# attention are independent of the others, so the chunks give the same result while the block's widest
# activations (vit_b at 1024 px: the 4x MLP hidden layer, 2 x 50 MB, and the windows' qkv, 45 MB) shrink
TOKEN_CHUNK = 1024


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> channels-last tokens (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def relative_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """(size, size, C) embeddings indexed by (query position, key position) along one axis.

    The learned table has one row per offset -(size-1)..(size-1); a table trained for another size is
    linearly resized first, as segment-anything does.
    """
    span = 2 * size - 1
    if table.shape[0] != span:
        table = F.interpolate(table.T[None], size=span, mode="linear")[0].T
    pos = torch.arange(size, device=table.device)
    return table[pos[:, None] - pos[None, :] + (size - 1)]


def chunk_plan(batch: int, heads: int, rows: int, cols: int, budget: int) -> tuple[int, int]:
    """(heads, query rows) per attention call so that the bias (B, heads, rows*cols, rows*cols) fits `budget`."""
    per_row = batch * cols * rows * cols  # bias elements of one head's one query row
    per_head = per_row * rows
    if per_head <= budget:
        return max(1, min(heads, budget // per_head)), rows
    return 1, max(1, min(rows, budget // per_row))


class RelPosAttention(nn.Module):
    """Multi-head self-attention over a (H, W) token grid with decomposed relative-position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_hw: tuple[int, int],
        qkv_bias: bool = True,
        mask_budget: int = DEFAULT_MASK_BUDGET,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.mask_budget = mask_budget
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_hw[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_hw[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n = h * w
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, N, hd)
        table_h = relative_table(h, self.rel_pos_h).to(q.dtype)  # (qh, kh, hd)
        table_w = relative_table(w, self.rel_pos_w).to(q.dtype)  # (qw, kw, hd)
        heads_per, rows_per = chunk_plan(b, self.num_heads, h, w, self.mask_budget)
        out = torch.empty_like(q)
        for h0 in range(0, self.num_heads, heads_per):
            heads = slice(h0, h0 + heads_per)
            for r0 in range(0, h, rows_per):
                r1 = min(r0 + rows_per, h)
                queries = slice(r0 * w, r1 * w)
                qc = q[:, heads, queries]
                grid = qc.unflatten(2, (r1 - r0, w))  # (B, hc, rows, W, hd)
                bias_h = torch.einsum("bnrwc,rkc->bnrwk", grid, table_h[r0:r1])  # (B, hc, rows, W, kh)
                bias_w = torch.einsum("bnrwc,wkc->bnrwk", grid, table_w)  # (B, hc, rows, W, kw)
                mask = (bias_h[..., :, None] + bias_w[..., None, :]).flatten(-2).flatten(2, 3)
                out[:, heads, queries] = F.scaled_dot_product_attention(qc, k[:, heads], v[:, heads], attn_mask=mask)
        return self.proj(out.permute(0, 2, 1, 3).reshape(b, h, w, c))


def to_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, size, size, C), zero-padded bottom/right; returns the padded (H, W)."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % size, -w % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // size, size, wp // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c), (hp, wp)


def from_windows(windows: torch.Tensor, size: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_windows`, padding cropped."""
    hp, wp = padded_hw
    c = windows.shape[-1]
    x = windows.view(-1, hp // size, wp // size, size, size, c).transpose(2, 3).reshape(-1, hp, wp, c)
    return x[:, : hw[0], : hw[1]].contiguous()


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; `window_size` 0 = global attention over the whole grid."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        grid_hw: tuple[int, int],
        mask_budget: int,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_hw = grid_hw if window_size == 0 else (window_size, window_size)
        self.attn = RelPosAttention(dim, num_heads, attn_hw, qkv_bias, mask_budget)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            windows, padded_hw = to_windows(y, self.window_size)
            per_call = max(1, TOKEN_CHUNK // self.window_size**2)
            attended = torch.cat([self.attn(part) for part in windows.split(per_call)])
            del windows
            y = from_windows(attended, self.window_size, padded_hw, hw)
        else:
            y = self.attn(y)
        x = x + y
        del y
        rows = max(1, TOKEN_CHUNK // x.shape[2])
        return torch.cat([part + self.mlp(self.norm2(part)) for part in x.split(rows, dim=1)], dim=1)


class EfficientImageEncoderViT(nn.Module):
    """Drop-in for `segment_anything.modeling.ImageEncoderViT` (SAM's settings: abs + rel pos, qkv bias)."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        window_size: int = 0,
        global_attn_indexes: tuple[int, ...] = (),
        mask_budget: int = DEFAULT_MASK_BUDGET,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        # construction order = segment-anything's, so a seeded random init gives the same weights
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                0 if i in global_attn_indexes else window_size,
                (grid, grid),
                mask_budget,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, img_size, img_size) normalised pixels -> (B, out_chans, grid, grid) embedding."""
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # type: ignore[no-any-return]
