"""Swin Transformer backbone run stage by stage, so language fusion can sit between blocks and downsampling.

We reuse transformers' `SwinModel` modules (patch embedding, window-attention blocks, patch merging) and drive
them ourselves: LAVT fuses words into each stage *after* its blocks and *before* its patch merging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import SwinConfig, SwinModel

from rrsis.errors import ModelError

# name -> (embed_dim, depths, heads, drop_path_rate); drop path 0.3 for the paper sizes as in LAVT.
SWIN_PRESETS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], float]] = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0.2),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0.3),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0.3),
    "swin_l": (192, (2, 2, 18, 2), (6, 12, 24, 48), 0.3),
    "tiny": (16, (1, 1, 2, 1), (1, 2, 2, 4), 0.0),  # for tests and benchmarks: real classes, small widths
}


def swin_config(name: str, window_size: int, image_px: int) -> SwinConfig:
    if name not in SWIN_PRESETS:
        raise ModelError(f"model.danet.backbone: unknown Swin preset {name!r}; allowed: {', '.join(SWIN_PRESETS)}")
    embed_dim, depths, heads, drop_path = SWIN_PRESETS[name]
    return SwinConfig(
        image_size=image_px,
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(heads),
        window_size=window_size,
        drop_path_rate=drop_path,
    )


class SwinBackbone(nn.Module):
    """The four Swin stages, each split into `blocks(i)` and `downsample(i)`; widths in `dims`."""

    def __init__(self, swin: SwinModel) -> None:
        super().__init__()
        self.embeddings = swin.embeddings
        self.stages = swin.encoder.layers
        base = swin.config.embed_dim
        self.dims: list[int] = [base * 2**i for i in range(len(self.stages))]

    def embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embedding: (B, 3, H, W) -> tokens (B, H/4 * W/4, C1) and their grid size."""
        tokens, dims = self.embeddings(pixels)
        return tokens, (int(dims[0]), int(dims[1]))

    def blocks(self, i: int, tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # always_partition: pad to whole windows instead of shrinking the window on small grids, as LAVT's
        # Swin does (and the relative-position table keeps matching the window).
        stage: Any = self.stages[i]
        for block in stage.blocks:
            tokens = block(tokens, hw, always_partition=True)[0]
        return tokens

    def downsample(self, i: int, tokens: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch merging after stage i (none after the last stage)."""
        merge: Any = getattr(self.stages[i], "downsample", None)
        if merge is None:
            return tokens, hw
        return merge(tokens, hw), ((hw[0] + 1) // 2, (hw[1] + 1) // 2)


def build_backbone(name: str, weights: str, window_size: int, image_px: int) -> SwinBackbone:
    """Random init from a preset, or weights from a user-supplied path (never downloaded).

    A directory is read with `SwinModel.from_pretrained(..., local_files_only=True)` and its own config wins
    over the preset; a file is a state dict for the preset architecture, loaded with `weights_only=True`.
    """
    if not weights:
        return SwinBackbone(SwinModel(swin_config(name, window_size, image_px), add_pooling_layer=False))
    path = Path(weights)
    if path.is_dir():
        try:
            swin = SwinModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"model.danet.backbone_weights: cannot load Swin from {path}: {exc}") from exc
        return SwinBackbone(swin)
    if not path.is_file():
        raise ModelError(f"model.danet.backbone_weights: no such file or directory: {path}")
    swin = SwinModel(swin_config(name, window_size, image_px), add_pooling_layer=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("swin."): v for k, v in state.items()}
    missing, unexpected = swin.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"model.danet.backbone_weights: {path} does not match {name} "
            f"({len(missing)} missing keys, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})"
        )
    return SwinBackbone(swin)
