"""The decoder-only checkpoint format: a self-describing dict of tensors and primitives (weights_only).

The frozen encoders never change during fine-tuning, so only the mask decoder is stored (a few MB for
vit_b instead of 375 MB) together with what it fits: the SAM model_type and its architecture. This module
builds and checks the dict; writing it (local or object storage) is `rrsis.checkpoints.save_decoder_checkpoint`
and reading a file is `rrsis.models.sam.build.build_sam` (`model.sam.decoder_checkpoint`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rrsis.errors import CheckpointError
from rrsis.models.sam.arch import sam_arch

if TYPE_CHECKING:  # typing only: segment_anything's package import pulls in torchvision
    from segment_anything.modeling import Sam

DECODER_KIND = "rrsis.sam_decoder"
DECODER_VERSION = 1
KEY = "model.sam.decoder_checkpoint"


def decoder_payload(
    sam: Sam,
    model_type: str,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    epoch: int = 0,
) -> dict[str, Any]:
    """The mask decoder's weights (on the CPU) with model name, arch, config, metrics and format version."""
    return {
        "kind": DECODER_KIND,
        "version": DECODER_VERSION,
        "model": "sam_decoder",
        "model_type": model_type,
        "arch": sam_arch(model_type).to_dict(),
        "config": dict(config or {}),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "epoch": int(epoch),
        "state_dict": {k: v.detach().cpu() for k, v in sam.mask_decoder.state_dict().items()},
    }


def check_decoder_state(state: dict[str, Any], where: str) -> dict[str, Any]:
    """`state` after checking its kind and version; `where` names the file in errors."""
    if state.get("kind") != DECODER_KIND:
        raise CheckpointError(f"{KEY} {where!r} is not an rrsis SAM decoder checkpoint (kind={state.get('kind')!r})")
    if state.get("version") != DECODER_VERSION:
        raise CheckpointError(
            f"{KEY} {where!r} has version {state.get('version')!r}; this rrsis reads {DECODER_VERSION}"
        )
    return state


def apply_decoder_state(sam: Sam, state: dict[str, Any], model_type: str, where: str) -> dict[str, Any]:
    """Replace `sam`'s mask decoder weights; the checkpoint must be for the same SAM model_type."""
    check_decoder_state(state, where)
    if state["model_type"] != model_type:
        raise CheckpointError(f"{KEY} {where!r} was trained for SAM {state['model_type']!r}, not {model_type!r}")
    try:
        sam.mask_decoder.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{KEY} {where!r} does not fit the decoder: {exc}") from exc
    return state
