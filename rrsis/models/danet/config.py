"""Typed config of the danet model family (pure dataclass)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DanetConfig:
    pass
