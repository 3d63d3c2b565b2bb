"""`rrsis train`: one entry for every model family.

The job's `storage:` section and `device` are applied first (a CUDA device asked where there is none fails
before any data is read). Then the family's recipe runs through the one epoch loop (`rrsis.train.fit`):
plainly, or with `train.enabled=true` on Ray Train workers (`rrsis.train.ray_train.fit`).

Plain run folder `<output>/<run_name>/` (local or s3://): `config.yaml`, `metrics.jsonl` (one line per epoch),
`best.pt` (by the family's ranking metric, `rrsis.train.fit.is_better`) and `last.pt`.
"""

from __future__ import annotations

from rrsis.config.train import TrainConfig
from rrsis.devices import resolve_device
from rrsis.session import configure_storage
from rrsis.train import ray_train
from rrsis.train.fit import run_plain


def run_train(cfg: TrainConfig) -> int:
    resolve_device(cfg.device)
    configure_storage(cfg.storage)
    if cfg.train.enabled:  # every family: its recipe inside a Ray Train TorchTrainer
        return ray_train.fit(cfg)
    return run_plain(cfg)
