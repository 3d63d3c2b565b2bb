"""`build_model(cfg)`: a small registry of builder functions, one per `model.name`.

Families register either with the `@register_model(name)` decorator (in a module imported here) or with a
lazy "module:function" entry in `LAZY_BUILDERS`, imported only when that model is built, so building the
water-land net never imports SAM or transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from rrsis.errors import ModelError
from rrsis.models.config import ModelConfig
from rrsis.models.waterland.net import WaterlandNet

ModelBuilder = Callable[[ModelConfig], nn.Module]

_BUILDERS: dict[str, ModelBuilder] = {}

# name -> "module:function" taking a ModelConfig; for families whose imports are heavy.
LAZY_BUILDERS: dict[str, str] = {
    "sam_decoder": "rrsis.models.sam.build:build_sam_from_model_config",
    "danet": "rrsis.models.danet.model:build_from_model_config",
    "grounding": "rrsis.models.grounding.model:build_from_model_config",
    "pslg_sam": "rrsis.models.pslg_sam:build_from_model_config",
}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register `fn(cfg: ModelConfig) -> nn.Module` under `name` (a `model.name` value)."""

    def decorate(fn: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ModelError(f"model {name!r} is registered twice")
        _BUILDERS[name] = fn
        return fn

    return decorate


def registered_models() -> tuple[str, ...]:
    """Every name `build_model` accepts."""
    return tuple(sorted({*_BUILDERS, *LAZY_BUILDERS}))


def _resolve(name: str) -> ModelBuilder:
    if name in _BUILDERS:
        return _BUILDERS[name]
    if name in LAZY_BUILDERS:
        module_name, _, fn_name = LAZY_BUILDERS[name].partition(":")
        fn: ModelBuilder = getattr(importlib.import_module(module_name), fn_name)
        return fn
    raise ModelError(f"model.name={name!r} has no builder; registered: {', '.join(registered_models())}")


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model `cfg.name` names from its typed config section."""
    return _resolve(cfg.name)(cfg)


@register_model("waterland")
def build_waterland(cfg: ModelConfig) -> nn.Module:
    return WaterlandNet(cfg.waterland)
