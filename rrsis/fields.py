"""Field helpers that attach validation rules to config dataclasses (checked by `rrsis.config.load.validate`).

Plain dataclasses only: the model, refine and job configs all import them, so this sits below all three.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: What a `device` key accepts; a closed list so validation names it (`rrsis.devices` reads any cuda:N)
DEVICES = ("auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(8)))


def choice(default: Any, *allowed: Any) -> Any:
    """A field whose value must be one of `allowed`."""
    return dataclasses.field(default=default, metadata={"choices": tuple(allowed)})


def device(default: str = "auto") -> Any:
    """A `device` field: auto|cpu|cuda|cuda:N (`rrsis.devices.resolve_device` turns it into a torch device)."""
    return choice(default, *DEVICES)


def bounded(
    default: float | int,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Any:
    """A numeric field within [low, high] (or open at either end)."""
    meta = {"low": low, "high": high, "open_low": open_low, "open_high": open_high}
    return dataclasses.field(default=default, metadata={"range": meta})


def items(default: list[Any], *allowed: Any) -> Any:
    """A list field whose every item must be one of `allowed`."""
    return dataclasses.field(default_factory=lambda: list(default), metadata={"item_choices": tuple(allowed)})


def describe_range(meta: dict[str, Any]) -> str:
    lo = "(" if meta["open_low"] else "["
    hi = ")" if meta["open_high"] else "]"
    low = "-inf" if meta["low"] is None else meta["low"]
    high = "inf" if meta["high"] is None else meta["high"]
    return f"{lo}{low}, {high}{hi}"


def in_range(value: float, meta: dict[str, Any]) -> bool:
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["open_low"] else value < low):
        return False
    if high is not None and (value >= high if meta["open_high"] else value > high):
        return False
    return True
