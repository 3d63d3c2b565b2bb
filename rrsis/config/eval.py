"""Config of `rrsis eval`: a checkpoint, a dataset split, where to write metrics and panels."""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.config.common import StorageConfig
from rrsis.config.train import DataConfig
from rrsis.fields import bounded, choice
from rrsis.fields import device as device_field
from rrsis.models.sam.config import SamConfig


@dataclass
class EvalConfig:
    checkpoint: str = "models/waterland_demo/model.pt"
    data: DataConfig = field(default_factory=DataConfig)
    split: str = choice("val", "train", "val", "test", "all")
    output: str = "outputs/eval"
    panels: int = bounded(4, 0, 100)
    baseline: bool = True  # water-land: print the Otsu-threshold baseline beside the model
    device: str = device_field()
    # referring models (grounding, pslg_sam): expressions per forward pass, and a cap for quick looks (0 = all)
    batch_size: int = bounded(8, 1, 4096)
    limit: int = bounded(0, 0)
    # a grounding checkpoint + this SAM section = PSLG-SAM (weak: frozen decoder; finetune: sam.decoder_checkpoint)
    with_sam: bool = False
    sam: SamConfig = field(default_factory=SamConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
