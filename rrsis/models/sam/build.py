"""Build SAM from `segment_anything`'s own classes, load user-supplied weights, freeze per mode.

One parameterised builder serves the official registry shapes (vit_b/l/h, numbers taken from
`segment_anything.build_sam`) and a `tiny` preset of the same classes for tests and benchmarks. Weights
come only from a local file the caller provides: a URI must be fetched first (rrsis.storage), nothing is
downloaded here. The image encoder is ours (`encoder.py`, memory-bounded attention) or segment-anything's
(`encoder: reference`); both have the same parameter names and seeded init, so every checkpoint fits both.
"""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rrsis.errors import CheckpointError, ModelError
from rrsis.models.sam.arch import PIXEL_MEAN, PIXEL_STD, RANDOM_INIT_PRESETS, SamArch, sam_arch
from rrsis.models.sam.checkpoint import KEY as DECODER_KEY
from rrsis.models.sam.checkpoint import apply_decoder_state
from rrsis.models.sam.config import SAM_ENCODERS, SamConfig
from rrsis.models.sam.encoder import EfficientImageEncoderViT
from rrsis.models.sam.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer


def build_image_encoder(arch: SamArch, encoder: str = "efficient") -> torch.nn.Module:
    """SAM's ViT image encoder: ours (`efficient`) or segment-anything's (`reference`), same state dict keys."""
    shape: dict[str, Any] = dict(
        depth=arch.encoder_depth,
        embed_dim=arch.encoder_embed_dim,
        img_size=arch.img_size,
        mlp_ratio=4,
        num_heads=arch.encoder_num_heads,
        patch_size=arch.patch_size,
        qkv_bias=True,
        global_attn_indexes=arch.encoder_global_attn_indexes,
        window_size=arch.window_size,
        out_chans=arch.prompt_embed_dim,
    )
    if encoder == "efficient":
        return EfficientImageEncoderViT(**shape)
    if encoder == "reference":
        return ImageEncoderViT(**shape, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True)
    raise ModelError(f"model.sam.encoder {encoder!r}; allowed: {', '.join(SAM_ENCODERS)}")


def build_sam_model(arch: SamArch, encoder: str = "efficient") -> Sam:
    """A randomly initialised `segment_anything.Sam` with the given shape and image encoder, in eval mode."""
    embed_hw = arch.img_size // arch.patch_size
    sam = Sam(
        image_encoder=build_image_encoder(arch, encoder),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embed_hw, embed_hw),
            input_image_size=(arch.img_size, arch.img_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam.eval()


def local_file(path: str, key: str) -> Path:
    """The checkpoint as a readable local file, or one line saying why not."""
    if "://" in path:
        raise CheckpointError(f"{key} {path!r} is a URI: fetch it to a local file first (rrsis.storage)")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{key} {path!r}: no such file")
    return p


def read_state(path: Path, key: str, *, mmap: bool = False) -> dict[str, Any]:
    """The state dict in `path`; `mmap` maps a zip-format checkpoint's tensors from the file instead of
    reading them into memory (a legacy-format file is read as usual)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{key} {str(path)!r} cannot be read as a torch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{key} {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def load_sam_weights(sam: Sam, path: str, model_type: str) -> None:
    """Load a full SAM state dict (the official .pth layout) strictly into `sam`.

    The checkpoint's fp32 tensors are mapped from the file and become `sam`'s own (`assign`; the mapping is
    copy-on-write), so the weights are not held twice: the random init is freed."""
    state = read_state(local_file(path, "model.sam.checkpoint"), "model.sam.checkpoint", mmap=True)
    if "kind" in state:
        raise CheckpointError(
            f"model.sam.checkpoint {path!r} is an rrsis {state['kind']!r} checkpoint; "
            "put it in model.sam.decoder_checkpoint and give the full SAM weights in model.sam.checkpoint"
        )
    # assign keeps the file's dtype: a checkpoint stored in half precision is copied (cast) into fp32 instead
    fp32 = all(t.dtype == torch.float32 for t in state.values() if torch.is_tensor(t) and t.is_floating_point())
    result = sam.load_state_dict(state, strict=False, assign=fp32)
    bad = list(result.missing_keys)[:3] + list(result.unexpected_keys)[:3]
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"model.sam.checkpoint {path!r} does not match SAM {model_type!r} "
            f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected keys, e.g. {bad})"
        )


def set_mode(sam: Sam, mode: str) -> None:
    """Freeze the image and prompt encoders always; the mask decoder unless fine-tuning (paper sec. 4.2)."""
    if mode not in ("weak", "finetune"):
        raise ModelError(f"model.sam.mode {mode!r}; allowed: 'weak', 'finetune'")
    for p in sam.parameters():
        p.requires_grad_(False)
    if mode == "finetune":
        for p in sam.mask_decoder.parameters():
            p.requires_grad_(True)


def build_sam(
    cfg: SamConfig,
    checkpoint_path: str | None = None,
    decoder_checkpoint_path: str | None = None,
) -> Sam:
    """SAM per `cfg`, weights from local files (overrides of cfg's paths, e.g. after a URI fetch)."""
    arch = sam_arch(cfg.model_type)
    ckpt = checkpoint_path if checkpoint_path is not None else cfg.checkpoint
    if not ckpt and cfg.model_type not in RANDOM_INIT_PRESETS:
        raise ModelError(
            f"model.sam.checkpoint is required for model_type {cfg.model_type!r} "
            "(a path to the official SAM weights; nothing is downloaded)"
        )
    torch.manual_seed(cfg.seed)
    sam = build_sam_model(arch, cfg.encoder)
    if ckpt:
        load_sam_weights(sam, ckpt, cfg.model_type)
    dec = decoder_checkpoint_path if decoder_checkpoint_path is not None else cfg.decoder_checkpoint
    if dec:
        load_decoder_checkpoint(sam, dec, cfg.model_type)
    set_mode(sam, cfg.mode)
    return sam.eval()


def load_decoder_checkpoint(sam: Sam, path: str, model_type: str) -> dict[str, Any]:
    """Replace `sam`'s mask decoder weights from a local decoder checkpoint file (weights_only)."""
    return apply_decoder_state(sam, read_state(local_file(path, DECODER_KEY), DECODER_KEY), model_type, path)


def trainable_parameters(sam: torch.nn.Module) -> int:
    return sum(p.numel() for p in sam.parameters() if p.requires_grad)


def build_sam_from_model_config(cfg: Any) -> Sam:
    """Registry entry for `model.name: sam_decoder` (cfg is a `ModelConfig`; its `sam` section is used)."""
    return build_sam(cfg.sam)
