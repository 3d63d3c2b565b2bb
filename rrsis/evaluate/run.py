"""`rrsis eval`: load a checkpoint and dispatch on its model name (water-land here, referring models lazily)."""

from __future__ import annotations

import importlib

from rrsis.checkpoints import load_checkpoint
from rrsis.config.eval import EvalConfig
from rrsis.devices import resolve_device
from rrsis.session import configure_storage

REFERRING_EVAL = "rrsis.evaluate.referring:run_referring_eval"


def run_eval(cfg: EvalConfig) -> int:
    resolve_device(cfg.device)  # fails before the checkpoint and data are read
    configure_storage(cfg.storage)
    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt.model_name == "waterland":
        from rrsis.evaluate.waterland import run_waterland_eval

        return run_waterland_eval(cfg, ckpt)
    module, _, fn = REFERRING_EVAL.partition(":")
    return int(getattr(importlib.import_module(module), fn)(cfg, ckpt) or 0)
