"""The one rule for turning a config's `device` into a `torch.device`, used by every job that runs a model.

`auto` is CUDA device 0 when torch sees one, else the CPU. `cpu`, `cuda` and `cuda:N` are taken literally:
asking for CUDA where there is none (or for an index beyond the devices present) is a `ConfigError`, one
line and exit 2 in the CLI; never a silent fallback to the CPU, which would turn a GPU job into one that runs
for days. Pure torch, no other rrsis layer: config, train, eval and the map stages can all import it.
"""

from __future__ import annotations

import torch

from rrsis.errors import ConfigError


def resolve_device(name: str, *, key: str = "device") -> torch.device:
    """`auto|cpu|cuda|cuda:N` -> the device to run on; `key` names the config key in the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        allowed = ", ".join(repr(d) for d in ("auto", "cpu", "cuda", "cuda:N"))
        raise ConfigError(f"config error: key '{key}': value {name!r} is not a device; allowed: {allowed}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"config error: key '{key}': {name} asked, but torch sees no CUDA device; use {key}=cpu")
    index = int(name[5:]) if ":" in name else 0
    if index >= count:
        raise ConfigError(
            f"config error: key '{key}': {name} asked, but torch sees {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)
