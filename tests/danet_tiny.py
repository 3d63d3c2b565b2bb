"""The one tiny DANet of the tests: the real classes at small widths with the offline MiniLM text encoder.

Same sizes as `configs/train/danet_tiny.yaml` (64 px input, 4x4 windows); `save_tiny_danet` writes it as a
self-describing checkpoint (about 90 MB: MiniLM's weights travel with it), as training would.
"""

from __future__ import annotations

import dataclasses

import torch

from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.models.config import ModelConfig
from rrsis.models.danet.config import DanetConfig
from rrsis.models.danet.model import Danet
from rrsis.models.registry import build_model

TINY = DanetConfig(
    backbone="tiny", window_size=4, input_px=64, decoder_dim=32, key_dim=16, num_heads=4, ffn_dim=48, k=8
)
MEAN, STD = list(TINY.pixel_mean), list(TINY.pixel_std)


def tiny_danet_config(**overrides: object) -> DanetConfig:
    return dataclasses.replace(TINY, **overrides)  # type: ignore[arg-type]


def save_tiny_danet(uri: str, seed: int = 0, **overrides: object) -> Danet:
    """Build a seeded tiny DANet through the registry and save it to `uri`; returns the model."""
    torch.manual_seed(seed)
    cfg = ModelConfig(name="danet", danet=tiny_danet_config(**overrides))
    model = build_model(cfg)
    assert isinstance(model, Danet)
    save_checkpoint(checkpoint_from_model(model, cfg, bands=["R", "G", "B"], norm_mean=MEAN, norm_std=STD), uri)
    return model
