"""Inference precision: which one a device can run fast, and the autocast that applies it.

Weights stay fp32 (checkpoints are never converted); a lower precision is only `torch.autocast` around a
forward. "auto" picks bf16 where the hardware multiplies bf16 natively (a CPU with AMX, a CUDA device with
bf16 support) and fp32 elsewhere: on a CPU without AMX, bf16 matmuls are emulated and slower than fp32,
except with AVX512-BF16, where an explicit "bf16" is faster (see `cpu_without_amx`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from rrsis.errors import ModelError

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPUINFO = Path("/proc/cpuinfo")

log = logging.getLogger(__name__)


def cpu_has_flag(flag: str, cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU advertises `flag` in /proc/cpuinfo (Linux only, else False)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and flag in line.split() for line in text.splitlines())


def cpu_has_amx_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU advertises AMX bf16 tiles (the `amx_bf16` flag)."""
    return cpu_has_flag("amx_bf16", cpuinfo)


def cpu_without_amx(capability: str, cpuinfo: Path = CPUINFO) -> str:
    """Why "auto" keeps fp32 on this CPU. With AVX512-BF16 (e.g. AMD Zen 4) bf16 dot products are native
    but narrower than AMX tiles: SAM's ViT-B encoder ran 1.47x faster in bf16 here (bench/sam_encoder.py,
    4.20 s against 6.16 s a 1024 px forward), so the log says how to ask for it."""
    if cpu_has_flag("avx512_bf16", cpuinfo):
        return (
            f"CPU without AMX (amx_bf16 flag absent, capability {capability}); it has avx512_bf16: "
            "infer.precision=bf16 uses its native bf16 dot products"
        )
    return f"CPU without AMX (amx_bf16 flag absent, capability {capability}): bf16 would be emulated"


@functools.cache
def note_fallback(requested: str, device_type: str, reason: str) -> None:
    """Log a precision fallback once per (request, device type, reason) in this process; at WARNING, the level
    a process without logging set up (a Ray inference actor) still prints."""
    log.warning("precision %s on %s -> fp32: %s", requested, device_type, reason)


def fast_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` runs bf16 natively, and if not, why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, ""
        return False, f"CUDA device {torch.cuda.get_device_name(device)} has no native bf16"
    if device.type == "cpu":
        if cpu_has_amx_bf16():
            return True, ""
        return False, cpu_without_amx(torch.backends.cpu.get_cpu_capability())
    return False, f"no bf16 rule for device type {device.type!r}"


def resolve_precision(requested: str | None, device: torch.device | str) -> str:
    """The precision to run on `device`: None or "auto" -> bf16 where native, else fp32.

    An explicit "bf16" is honoured on a CPU (emulated, slow, but the caller asked) and falls back to fp32
    on a CUDA device that cannot run it; "fp16" is honoured as asked.
    """
    dev = torch.device(device)
    name = "auto" if requested is None else requested.lower()
    if name not in ("auto", *PRECISIONS):
        raise ModelError(f"precision {requested!r}; allowed: auto, {', '.join(PRECISIONS)}")
    if name in ("fp32", "fp16") or (name == "bf16" and dev.type != "cuda"):
        return name
    native, reason = fast_bf16(dev)
    if native:
        return "bf16"
    note_fallback(name, dev.type, reason)
    return "fp32"


@contextlib.contextmanager
def autocast_for(precision: str, device: torch.device | str) -> Iterator[None]:
    """`torch.autocast` at `precision` on `device`'s type; fp32 is a no-op."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r}; allowed: {', '.join(PRECISIONS)} (resolve 'auto' first)")
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[precision]):
        yield
