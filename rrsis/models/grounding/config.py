"""Typed config of the grounding model family (pure dataclass)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GroundingConfig:
    pass
