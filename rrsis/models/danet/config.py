"""Typed config of the danet model family (pure dataclass).

`eaas=false, raam=false` is the LAVT baseline; the other switches are the paper's ablations
(Tab. 3: EAAS/RAAM on/off, Tab. 4: affinity stages, Tab. 5: agent_mode, Tab. 6: alpha, Fig. 4: k, lambda_af).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.errors import ConfigError
from rrsis.fields import bounded, choice, items

BACKBONES = ("swin_b", "swin_t", "swin_s", "swin_b", "swin_l", "tiny")
AGENT_MODES = ("raam", "raam", "cross_attention", "masked_attention")
DISTANCES = ("scaled_dot", "scaled_dot", "cosine", "neg_l2")


@dataclass
class DanetConfig:
    # --- ablation switches ---
    eaas: bool = True  # explicit affinity alignment strategy (eq. 1-3), no learnable parameters
    raam: bool = True  # reliable agent alignment module (eq. 4-9) + dynamic predictor (eq. 10)
    agent_mode: str = choice(*AGENT_MODES)  # Tab. 5: how L_g is aligned with X when raam=true
    k: int = bounded(32, 1, 1_000_000)  # number of reliable agents (eq. 6)
    lambda_af: float = bounded(0.5, 0.0)  # eq. 11 weight of L_affinity
    alpha: float = bounded(0.80, 0.0, 1.0, open_low=True, open_high=True)  # eq. 2 threshold
    affinity_stages: list[int] = items([2, 3, 4], 1, 2, 3, 4)  # noqa: RUF009  Tab. 4: {F2, F3, F4} is the paper default
    # eq. 1's ||F||^2: `frobenius` (the matrix norm, as written) or `cosine` (per-pixel norms ||f_m|| ||f_n||,
    # an alternative reading under which the affinity is far from uniform). Stage 1 costs (h1*w1)^2 per image.
    affinity_norm: str = choice("frobenius", "frobenius", "cosine")
    dis: str = choice(*DISTANCES)  # eq. 5 distance; the paper's eq. 7 implies the scaled dot product
    # --- architecture ---
    backbone: str = choice(*BACKBONES)  # Swin size; `tiny` is a few-channel preset for tests
    backbone_weights: str = ""  # path to a transformers SwinModel directory/state dict; empty: random init
    window_size: int = bounded(12, 1, 64)  # LAVT runs Swin-B with 12x12 windows at 480x480
    text_encoder: str = ""  # BERT-family model directory; empty: the offline all-MiniLM-L6-v2 package
    text_trainable: bool = True  # LAVT/DANet fine-tune the language encoder
    max_tokens: int = bounded(20, 2, 512)  # LAVT pads/truncates expressions to 20 tokens
    input_px: int = bounded(480, 32, 4096)  # square input size (480 in the paper)
    decoder_dim: int = bounded(256, 1)  # C of the decoder features E (LAVT: 256)
    key_dim: int = bounded(256, 1)  # C_k of eq. 4 (queries/keys)
    num_heads: int = bounded(8, 1)  # heads of RAAM's self-attention over the predictor
    ffn_dim: int = bounded(1024, 1)  # hidden width of RAAM's FFN
    dropout: float = bounded(0.0, 0.0, 1.0, open_high=True)
    # RGB normalisation of the Swin weights (ImageNet, 0-1 RGB): used when predicting from raw uint8 images.
    pixel_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    pixel_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def validate(self, prefix: str = "") -> None:
        """Cross-field checks the field helpers cannot express (each names the key)."""
        if not self.affinity_stages and self.eaas:
            raise ConfigError(
                f"config error: key '{prefix}affinity_stages': must name at least one stage when eaas=true"
            )
        if len(set(self.affinity_stages)) != len(self.affinity_stages):
            raise ConfigError(f"config error: key '{prefix}affinity_stages': duplicate stage in {self.affinity_stages}")
        if self.decoder_dim % self.num_heads:
            raise ConfigError(
                f"config error: key '{prefix}num_heads': {self.num_heads} must divide decoder_dim={self.decoder_dim}"
            )
        for key in ("pixel_mean", "pixel_std"):
            if len(getattr(self, key)) != 3:
                raise ConfigError(f"config error: key '{prefix}{key}': needs 3 values (R, G, B)")
        if min(self.pixel_std) <= 0:
            raise ConfigError(f"config error: key '{prefix}pixel_std': values must be > 0")
        if self.input_px % 32:
            raise ConfigError(f"config error: key '{prefix}input_px': {self.input_px} must be a multiple of 32")
