"""Optimiser and learning-rate schedule from `optim.*`: Adam as in Table II of the water/land paper, AdamW or
SGD for experiments; a constant, cosine or step-decay schedule with optional linear warm-up.

A decayed schedule matters on small data: with a constant rate the weights keep jumping between minima, so
the last epoch (what `optim.monitor=last` keeps) is a lottery ticket. The schedule steps once per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from rrsis.config.train import OptimConfig
from rrsis.errors import ConfigError


def build_optimizer(cfg: OptimConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    name, lr, wd = cfg.name, float(cfg.lr), float(cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    raise ConfigError(f"optim.name={name!r} is not one of adam, adamw, sgd")


def lr_factor(cfg: OptimConfig, epoch: int) -> float:
    """Multiplier of `optim.lr` for 0-based `epoch`: linear warm-up over `warmup_epochs`, then
    constant, cosine from 1 down to `min_lr_ratio` at the last epoch, or x`lr_decay_factor` after each of
    `lr_decay_epochs` (1-based epoch numbers, as the grounding loop reads them)."""
    warm = int(cfg.warmup_epochs)
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return float(cfg.lr_decay_factor ** sum(1 for e in cfg.lr_decay_epochs if epoch >= e))
    if cfg.schedule == "cosine":
        span = max(int(cfg.epochs) - warm - 1, 1)
        progress = min((epoch - warm) / span, 1.0)
        floor = float(cfg.min_lr_ratio)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"optim.schedule={cfg.schedule!r} is not one of constant, cosine, step")


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch schedule: call `.step()` after each epoch; epoch 0 trains at `lr * lr_factor(cfg, 0)`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(cfg, epoch))
