"""Typed config of the SAM family (pure dataclass): which SAM, where its weights are, how it is prompted.

`checkpoint` and `decoder_checkpoint` may be URIs in a job config; the caller (pipeline/train) fetches
them to a local file before `build_sam` — this package never downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.fields import bounded, choice
from rrsis.refine.config import CfpgConfig, MboConfig

SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "tiny", "vit_b_256")
SAM_ENCODERS = ("efficient", "reference")
SAM_PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass
class SamConfig:
    model_type: str = choice("vit_b", *SAM_MODEL_TYPES)  # "tiny", "vit_b_256": random-init test/bench presets
    checkpoint: str = ""  # full SAM state dict (official .pth); empty only for "tiny" (seeded random init);
    # checked when the model is built, not at load, since every job config carries a default sam section
    # image encoder implementation, same weights either way: "efficient" (rrsis.models.sam.encoder, attention
    # in bounded chunks) or "reference" (segment_anything's ImageEncoderViT, kept for comparison)
    encoder: str = choice("efficient", *SAM_ENCODERS)
    # arithmetic of the image encoder's forward under autocast (rrsis.models.precision), weights stay fp32;
    # `rrsis map` sets it from infer.precision (`task_boxes.sam_options`)
    precision: str = choice("fp32", *SAM_PRECISIONS)
    decoder_checkpoint: str = ""  # rrsis fine-tuned decoder checkpoint, replaces the mask decoder weights
    mode: str = choice("weak", "weak", "finetune")  # weak: decoder frozen; finetune: decoder trainable
    multimask: bool = False  # predict 3 masks per prompt and keep the best-scored one
    mask_threshold: float = 0.0  # logit threshold of a mask pixel (SAM's own default)
    prompt_batch: int = bounded(64, 1, 65536)  # prompts decoded together against one embedding
    seed: int = 0  # random init of the "tiny" preset
    cfpg: CfpgConfig = field(default_factory=CfpgConfig)
    mbo: MboConfig = field(default_factory=MboConfig)
