"""One recipe per model family: the pieces the shared epoch loop needs, built from a TrainConfig.

A `Recipe` puts a family's model, datasets, its own `train_one_epoch` / `evaluate` functions and its
self-describing checkpoint behind one signature, so the one epoch loop (`rrsis.train.fit`: the plain run, the
Ray Train worker, the Tune trial) never branches on the family. Each family builds its recipe in its own
module (`recipe(cfg, device)` in `rrsis.train.waterland`, `.danet`, `.grounding`, `.sam_decoder`), named in
`RECIPES` and imported only when that family trains. Nothing here imports Ray.

What DDP wraps and what ranks checkpoints differ per family: each `recipe` says it in its docstring, and
`score_attribute` names the ranking metric.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rrsis.config.train import TrainConfig
from rrsis.errors import ConfigError
from rrsis.log import get_logger
from rrsis.train.preflight import check_inputs, has_validation

log = get_logger(__name__)

Scheduler = torch.optim.lr_scheduler.LRScheduler
TrainEpoch = Callable[[nn.Module, Iterable[Any], torch.optim.Optimizer, Scheduler | None], dict[str, float]]
# model.name -> "module:function" building its Recipe from (cfg, device). Imported only for the family being
# trained, as the map driver's TASKS are: a water-land run never pays for transformers, torchvision or SAM.
RECIPES: dict[str, str] = {
    "waterland": "rrsis.train.waterland:recipe",
    "danet": "rrsis.train.danet:recipe",
    "grounding": "rrsis.train.grounding:recipe",
    "sam_decoder": "rrsis.train.sam_decoder:recipe",
}
FAMILIES = tuple(RECIPES)


def _no_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Scheduler | None:
    return None


@dataclass
class Recipe:
    """A family's training pieces. `train_epoch(ddp_module or its DDP wrapper, batches, optimizer, scheduler)`
    returns at least {"loss": mean training loss}; `evaluate(batches)` runs on the unwrapped model."""

    model: nn.Module  # unwrapped: evaluated and checkpointed
    ddp_module: nn.Module  # what DDP wraps
    state_module: nn.Module  # whose weights `state.pt` holds (the trained part)
    train_set: Any  # indexable; a DistributedSampler shards it under Ray
    train_epoch: TrainEpoch
    make_optimizer: Callable[[], torch.optim.Optimizer]
    save_model: Callable[[str, dict[str, float]], None]  # (local file, metrics): self-describing checkpoint
    make_scheduler: Callable[[torch.optim.Optimizer, int], Scheduler | None] = _no_scheduler
    collate: Callable[[list[Any]], Any] | None = None
    val_set: Any = None
    evaluate: Callable[[Iterable[Any]], dict[str, float]] | None = None
    val_batch_size: int = 1
    # the plain run's sample order (None: DataLoader's shuffle); Ray Train shards with a DistributedSampler
    plain_order: Callable[[], Any] | None = None
    # DDP must be told when some trainable parameter gets no gradient in a step (DANet's RAAM query projection
    # with some switches, SAM's IoU head under a mask-only loss): else its bucket is never all-reduced and the
    # ranks' weights drift apart silently until DDP errors on the next step
    find_unused_parameters: bool = False


def model_file(cfg: TrainConfig) -> str:
    """The checkpoint file a family writes: SAM's is decoder-only (`rrsis.models.sam.checkpoint`)."""
    return "decoder.pt" if cfg.model.name == "sam_decoder" else "model.pt"


def check_family(cfg: TrainConfig) -> None:
    if cfg.model.name not in FAMILIES:
        allowed = ", ".join(FAMILIES)
        raise ConfigError(f"config error: key 'model.name': {cfg.model.name!r} does not train; allowed: {allowed}")


def score_attribute(cfg: TrainConfig) -> str:
    """The metric that ranks checkpoints (higher is better): the family's validation metric, else the epoch."""
    check_family(cfg)
    name = cfg.model.name
    if cfg.optim.monitor == "last" or name == "sam_decoder":
        return "epoch"
    if not has_validation(cfg):
        return "epoch"
    if name == "waterland":
        return f"val_{cfg.optim.monitor}"
    return "val_miou" if name == "danet" else "val_box_acc@0.5"


def build_recipe(cfg: TrainConfig, device: torch.device) -> Recipe:
    """The recipe of `cfg.model.name`, its model on `device` (seed the RNG before calling)."""
    check_family(cfg)
    check_inputs(cfg)  # a missing data root, weights file or text encoder: one line, before any model is built
    if cfg.data.train_fraction < 1.0 and cfg.model.name != "sam_decoder":
        raise ConfigError("config error: key 'data.train_fraction': only model.name=sam_decoder subsamples its data")
    if cfg.model.name != "waterland" and (cfg.optim.amp or cfg.optim.grad_accum > 1):
        raise ConfigError(
            f"config error: keys 'optim.amp' / 'optim.grad_accum': only the water-land loop has them, "
            f"not model.name={cfg.model.name!r}; set optim.amp=false optim.grad_accum=1"
        )
    module, _, function = RECIPES[cfg.model.name].partition(":")
    build: Callable[[TrainConfig, torch.device], Recipe] = getattr(importlib.import_module(module), function)
    return build(cfg, device)
