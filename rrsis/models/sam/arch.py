"""SAM's shapes: every width and depth of the official vit_b/l/h (numbers from `segment_anything.build_sam`)
and of the random-init presets, as plain data (no torch), so checkpoints can describe what they fit."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rrsis.errors import ModelError

PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's ImageNet statistics (0-255 RGB), part of the model
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamArch:
    """Every width/depth of a SAM; the checkpoint must match it key for key."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return d


SAM_ARCHS: dict[str, SamArch] = {
    "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    # 64 px input, 8x8 embedding, 32-wide everything: seconds on a CPU, same classes and code paths
    "tiny": SamArch(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        img_size=64,
        patch_size=8,
        window_size=4,
        prompt_embed_dim=32,
        mask_in_chans=4,
        decoder_depth=2,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
    ),
    # vit_b's encoder widths and depth at a 256 px input (random weights only): a tile embed costs what a
    # vit_b-sized encoder costs per 256 px tile, so benchmarks see a representative inference load
    "vit_b_256": SamArch(768, 12, 12, (2, 5, 8, 11), img_size=256),
}
RANDOM_INIT_PRESETS = ("tiny", "vit_b_256")  # no official weights exist for these shapes


def sam_arch(model_type: str) -> SamArch:
    if model_type not in SAM_ARCHS:
        raise ModelError(f"unknown SAM model_type {model_type!r}; allowed: {', '.join(SAM_ARCHS)}")
    return SAM_ARCHS[model_type]
