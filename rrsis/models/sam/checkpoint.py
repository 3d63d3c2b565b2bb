"""Decoder-only checkpoints: self-describing dicts of tensors and primitives, loadable with weights_only.

The frozen encoders never change during fine-tuning, so only the mask decoder is stored (a few MB for
vit_b instead of 375 MB) together with what it fits: the SAM model_type and its architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam

from rrsis.errors import CheckpointError
from rrsis.models.sam.build import local_file, read_state, sam_arch

DECODER_KIND = "rrsis.sam_decoder"
DECODER_VERSION = 1


def save_decoder_checkpoint(
    sam: Sam,
    path: str | Path,
    model_type: str,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    epoch: int = 0,
) -> Path:
    """Write the mask decoder's weights with model name, arch, config, metrics and format version."""
    payload = {
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
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)  # never leave a half-written checkpoint under the final name
    return out


def read_decoder_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint dict after checking its kind and version (weights_only=True)."""
    key = "model.sam.decoder_checkpoint"
    state = read_state(local_file(path, key), key)
    if state.get("kind") != DECODER_KIND:
        raise CheckpointError(f"{key} {path!r} is not an rrsis SAM decoder checkpoint (kind={state.get('kind')!r})")
    if state.get("version") != DECODER_VERSION:
        raise CheckpointError(
            f"{key} {path!r} has version {state.get('version')!r}; this rrsis reads {DECODER_VERSION}"
        )
    return state


def load_decoder_checkpoint(sam: Sam, path: str, model_type: str) -> dict[str, Any]:
    """Replace `sam`'s mask decoder weights; the checkpoint must be for the same SAM model_type."""
    state = read_decoder_checkpoint(path)
    if state["model_type"] != model_type:
        raise CheckpointError(
            f"model.sam.decoder_checkpoint {path!r} was trained for SAM {state['model_type']!r}, not {model_type!r}"
        )
    try:
        sam.mask_decoder.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"model.sam.decoder_checkpoint {path!r} does not fit the decoder: {exc}") from exc
    return state
