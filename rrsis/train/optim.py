"""Optimiser from `optim.*`: Adam as in Table II of the water/land paper, AdamW or SGD for experiments."""

from __future__ import annotations

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
