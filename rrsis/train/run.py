"""`rrsis train`: one entry for every model family.

The job's `storage:` section and `device` are applied first (a CUDA device asked where there is none fails
before any data is read). Then the family's recipe runs through the one epoch loop (`rrsis.train.fit`):
plainly, or with `train.enabled=true` on Ray Train workers (`rrsis.train.ray_train.fit`).

Plain run folder `<output>/<run_name>/` (local or s3://): `config.yaml`, `metrics.jsonl` (one line per epoch),
`best.pt` (by the family's ranking metric, `rrsis.train.fit.is_better`) and `last.pt`; then `report.html`
(`rrsis.report`: per-epoch plots, the best checkpoint, the config).
"""

from __future__ import annotations

from rrsis.config.train import TrainConfig
from rrsis.devices import resolve_device
from rrsis.report import report_run
from rrsis.session import configure_storage
from rrsis.train import ray_train
from rrsis.train.fit import run_plain
from rrsis.train.recipes import score_attribute


def run_train(cfg: TrainConfig) -> int:
    resolve_device(cfg.device)
    configure_storage(cfg.storage)
    # every family: its recipe plainly, or inside a Ray Train TorchTrainer
    code = ray_train.fit(cfg) if cfg.train.enabled else run_plain(cfg)
    report_run(ray_train.run_dir(cfg), kind="train", rank_by=score_attribute(cfg))
    return code
