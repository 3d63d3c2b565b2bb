"""Config of `rrsis tune`: a base train config, a search space file, the scheduler and budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.config.common import RayConfig, StorageConfig
from rrsis.config.train import TrainConfig
from rrsis.fields import bounded, choice


@dataclass
class TuneConfig:
    base: TrainConfig = field(default_factory=TrainConfig)
    space: str = "configs/tune/space_waterland.yaml"
    num_samples: int = bounded(8, 1, 100000)
    metric: str = "val_iou_mean"
    mode: str = choice("max", "max", "min")
    scheduler: str = choice("asha", "asha", "fifo")
    grace_period: int = bounded(1, 1)
    reduction_factor: int = bounded(2, 2)
    max_concurrent: int = bounded(2, 1)
    cpus_per_trial: float = bounded(1.0, 0.0, 256.0)
    output: str = "runs/tune"
    name: str = "tune"
    restore: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
