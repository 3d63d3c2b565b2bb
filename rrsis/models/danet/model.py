"""DANet = LAVT (language-aware Swin encoder + upsampling decoder) + EAAS targets + RAAM predictor.

With `eaas=false, raam=false` this module *is* LAVT: the fixed 1x1 kernel predicts from E. EAAS adds no
parameters (it only returns features and hard labels for the loss). RAAM replaces the fixed kernel by the
dynamic predictor L̂_g of eq. 9 and eq. 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rrsis.models.config import ModelConfig
from rrsis.models.danet.backbone import build_backbone
from rrsis.models.danet.config import DanetConfig
from rrsis.models.danet.decoder import FixedKernelHead, UpsamplingDecoder
from rrsis.models.danet.eaas import text_to_visual_labels
from rrsis.models.danet.encoder import LanguageAwareEncoder
from rrsis.models.danet.raam import ReliableAgentAlignment, predict
from rrsis.models.danet.text import TextEncoder


@dataclass
class DanetOutput:
    """`logits` (B, 1, H, W) at input size; per affinity stage its F_i (B, N_i, C_i) and Â_tv (B, N_i)."""

    logits: torch.Tensor
    affinity_features: list[torch.Tensor] = field(default_factory=list)
    affinity_labels: list[torch.Tensor] = field(default_factory=list)


class Danet(nn.Module):
    def __init__(self, cfg: DanetConfig, encoder: LanguageAwareEncoder, text: TextEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.text = text
        self.encoder = encoder
        self.decoder = UpsamplingDecoder(encoder.dims, cfg.decoder_dim)
        self.head: FixedKernelHead | None = None
        self.raam: ReliableAgentAlignment | None = None
        if cfg.raam:
            self.raam = ReliableAgentAlignment(
                vis_dim=encoder.dims[3],
                text_dim=text.dim,
                key_dim=cfg.key_dim,
                value_dim=cfg.decoder_dim,
                k=cfg.k,
                dis=cfg.dis,
                mode=cfg.agent_mode,
                num_heads=cfg.num_heads,
                ffn_dim=cfg.ffn_dim,
                dropout=cfg.dropout,
            )
        else:
            self.head = FixedKernelHead(cfg.decoder_dim)

    def forward(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DanetOutput:
        """image (B, 3, H, W) normalised; input_ids/attention_mask (B, L) from `text.tokenize`."""
        words, sentence = self.text(input_ids, attention_mask)
        return self.forward_text(image, words, sentence, attention_mask)

    def forward_text(
        self, image: torch.Tensor, words: torch.Tensor, sentence: torch.Tensor, attention_mask: torch.Tensor
    ) -> DanetOutput:
        """`forward` from text features already computed (a map run embeds its one query once per actor)."""
        feats = self.encoder(image, words, attention_mask)
        e = self.decoder([feats.map(i) for i in range(4)])
        if self.raam is not None:
            logits = predict(e, self.raam(feats.tokens[3], words, attention_mask, sentence))
        else:
            assert self.head is not None
            logits = self.head(e)
        # Eq. 10 at E's 1/4 resolution, then bilinear: identical to upsampling E first, as both are linear.
        out = DanetOutput(F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True))
        if self.cfg.eaas and self.training:
            for stage in sorted(self.cfg.affinity_stages):
                tokens = feats.tokens[stage - 1]
                out.affinity_features.append(tokens)
                pwam: Any = self.encoder.pwams[stage - 1]
                out.affinity_labels.append(text_to_visual_labels(pwam, tokens, sentence, self.cfg.alpha))
        return out


def build_danet(cfg: DanetConfig) -> Danet:
    text = TextEncoder(cfg.text_encoder, trainable=cfg.text_trainable)
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.window_size, cfg.input_px)
    return Danet(cfg, LanguageAwareEncoder(backbone, text.dim, cfg.dropout), text)


def build_from_model_config(cfg: ModelConfig) -> Danet:
    """Registry entry point (`model.name=danet`)."""
    return build_danet(cfg.danet)
