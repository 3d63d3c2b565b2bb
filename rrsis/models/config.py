"""The model section shared by every job config: `name` picks the family, each family has its section."""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.fields import choice
from rrsis.models.danet.config import DanetConfig
from rrsis.models.grounding.config import GroundingConfig
from rrsis.models.sam.config import SamConfig
from rrsis.models.waterland.config import WaterlandConfig

MODEL_NAMES = ("waterland", "sam_decoder", "grounding", "danet", "pslg_sam")


@dataclass
class ModelConfig:
    name: str = choice("waterland", *MODEL_NAMES)
    waterland: WaterlandConfig = field(default_factory=WaterlandConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    danet: DanetConfig = field(default_factory=DanetConfig)
