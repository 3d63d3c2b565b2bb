"""Typed config of the sam model family (pure dataclass)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamConfig:
    pass
