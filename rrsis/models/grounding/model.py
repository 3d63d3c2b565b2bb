"""PSLG-SAM stage one: a visual grounding model, F_C = Dec_vg(F_v ⊙ φ(F_t)) (paper eq. 1).

Decoder style: LQVG-style language-guided query decoder, not TransVG's single [REG] token. The paper
adopts LQVG for its grounding stage, and a DETR-like decoder over a small set of queries lets several
hypotheses compete on scenes with many similar objects (remote-sensing targets are small and repeated);
each query regresses a box and a confidence, the best-scored box is the output. With one target per
expression, training matches the cheapest query (see `losses.py`). We keep LQVG's ideas — multi-scale
visual tokens (C4 + C5), text-conditioned visual features, queries initialised from the sentence — but not
its exact MSCMA block, which the PSLG-SAM paper does not specify.

Fusion (eq. 1): φ projects the word features to the hidden width; every visual token attends over the
words (cross-attention) and the attended language context multiplies the visual token element-wise (⊙),
with a residual, as LAVT's pixel-word attention does. The decoder's memory is the fused visual tokens plus
the projected words.

Boxes are (cx, cy, w, h) normalised to the original image: the image is resized (not letterboxed) to
`image_size_px` square, so normalised coordinates map back exactly with the original width and height.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rrsis.errors import InputError
from rrsis.models.grounding.config import GroundingConfig
from rrsis.models.grounding.encoders import ResNetEncoder, TextEncoder
from rrsis.models.grounding.losses import cxcywh_to_xyxy


def sine_position_2d(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """(h*w, dim) fixed sine/cosine embedding of normalised (y, x), half the channels each (DETR)."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    ey = torch.cat((torch.sin(ys[:, None] * freq), torch.cos(ys[:, None] * freq)), dim=1)  # (h, 2q)
    ex = torch.cat((torch.sin(xs[:, None] * freq), torch.cos(xs[:, None] * freq)), dim=1)  # (w, 2q)
    pos = torch.cat((ey[:, None, :].expand(h, w, -1), ex[None, :, :].expand(h, w, -1)), dim=-1)
    out = torch.zeros(h * w, dim, device=device)
    out[:, : pos.shape[-1]] = pos.reshape(h * w, -1)
    return out


class MLP(nn.Module):
    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, layers: int) -> None:
        super().__init__()
        dims = [dim_in] + [dim_hidden] * (layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class GroundingModel(nn.Module):
    """Image (B, 3, S, S) normalised + tokens -> boxes (B, Q, 4) cxcywh in [0, 1] and logits (B, Q)."""

    def __init__(self, cfg: GroundingConfig) -> None:
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        d = cfg.hidden_dim
        self.visual = ResNetEncoder(cfg.image_encoder, cfg.image_weights)
        self.text = TextEncoder(cfg.text_encoder, cfg.max_query_tokens, cfg.text_trainable)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(min(32, d // 4), d))
            for c in self.visual.channels
        )
        self.level_embed = nn.Parameter(torch.randn(len(self.visual.channels), d) * 0.02)
        self.phi = nn.Sequential(nn.Linear(self.text.dim, d), nn.LayerNorm(d))  # φ of eq. 1
        self.fuse_attn = nn.MultiheadAttention(d, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.fuse_out = nn.Linear(d, d)
        self.fuse_norm = nn.LayerNorm(d)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.query_from_text = nn.Linear(d, d)
        layer = nn.TransformerDecoderLayer(
            d, cfg.num_heads, cfg.ffn_dim, cfg.dropout, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers, norm=nn.LayerNorm(d))
        self.box_head = MLP(d, d, 4, 3)
        self.score_head = nn.Linear(d, 1)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.level_embed.device

    def visual_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F_v: (B, N, d) tokens of C4 and C5 with their (N, d) position + level embeddings."""
        tokens, pos = [], []
        for lvl, (fmap, proj) in enumerate(zip(self.visual(pixels), self.input_proj, strict=True)):
            x = proj(fmap)
            _, d, h, w = x.shape
            tokens.append(x.flatten(2).transpose(1, 2))
            pos.append(sine_position_2d(h, w, d, x.device) + self.level_embed[lvl])
        return torch.cat(tokens, dim=1), torch.cat(pos, dim=0)

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        f_v, pos = self.visual_tokens(pixels)
        words = self.phi(self.text(input_ids, attention_mask))  # φ(F_t): (B, L, d)
        pad = attention_mask == 0
        ctx, _ = self.fuse_attn(f_v + pos, words, words, key_padding_mask=pad)
        fused = self.fuse_norm(f_v + self.fuse_out(f_v * ctx))  # F_v ⊙ φ(F_t), residual
        memory = torch.cat((fused + pos, words), dim=1)
        memory_pad = torch.cat((torch.zeros(fused.shape[:2], dtype=torch.bool, device=pad.device), pad), dim=1)
        keep = attention_mask.unsqueeze(-1).to(words.dtype)
        sentence = (words * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        queries = self.query_embed.weight[None] + self.query_from_text(sentence)[:, None]
        hs = self.decoder(queries, memory, memory_key_padding_mask=memory_pad)
        return {"boxes": self.box_head(hs).sigmoid(), "logits": self.score_head(hs).squeeze(-1)}

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """(H, W, 3) uint8 RGB images of any sizes -> (B, 3, S, S) normalised tensor."""
        size = self.cfg.image_size_px
        out = []
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
                raise InputError(f"grounding: image {i} must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
            x = torch.as_tensor(img, device=self.device).permute(2, 0, 1)[None].float() / 255.0
            out.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
        mean, std = self.get_buffer("pixel_mean"), self.get_buffer("pixel_std")
        return (torch.cat(out) - mean) / std

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Best box per expression in image pixels (B, 4) xyxy float64, and its score (B,) in [0, 1]."""
        if len(images) != len(texts):
            raise InputError(f"grounding: {len(images)} images but {len(texts)} expressions")
        if not images:
            return np.zeros((0, 4)), np.zeros(0)
        for i, t in enumerate(texts):
            if not t.strip():
                raise InputError(f"grounding: expression {i} is empty")
        was_training = self.training
        self.eval()
        ids, mask = self.text.tokenize(texts, self.device)
        out = self(self.preprocess(images), ids, mask)
        self.train(was_training)
        probs = out["logits"].sigmoid()
        best = probs.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        boxes = cxcywh_to_xyxy(out["boxes"][rows, best]).clamp(0.0, 1.0).double().cpu().numpy()
        wh = np.array([[img.shape[1], img.shape[0], img.shape[1], img.shape[0]] for img in images], np.float64)
        return boxes * wh, probs[rows, best].double().cpu().numpy()

    def param_groups(self, lr_text: float, lr_rest: float) -> list[dict[str, object]]:
        """AdamW groups of the paper (sec. 4.2): the text encoder at lr_text, everything else at lr_rest."""
        text = [p for n, p in self.named_parameters() if n.startswith("text.") and p.requires_grad]
        rest = [p for n, p in self.named_parameters() if not n.startswith("text.") and p.requires_grad]
        groups: list[dict[str, object]] = [{"params": rest, "lr": lr_rest, "name": "rest"}]
        if text:
            groups.append({"params": text, "lr": lr_text, "name": "text"})
        return groups


def build_from_model_config(cfg: Any) -> GroundingModel:
    """Registry entry for `model.name: grounding` (cfg is a `ModelConfig`; its `grounding` section is used)."""
    return GroundingModel(cfg.grounding)
