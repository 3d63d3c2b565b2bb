"""`rrsis eval`: load a checkpoint and dispatch on its model name (water-land, else a referring model); then
`report.html` beside the metrics (`rrsis.report`)."""

from __future__ import annotations

from rrsis import storage
from rrsis.checkpoints import load_checkpoint
from rrsis.config.eval import EvalConfig
from rrsis.config.load import to_dict
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.evaluate.referring import run_referring_eval
from rrsis.evaluate.waterland import run_waterland_eval
from rrsis.report import report_run
from rrsis.session import configure_storage


def run_eval(cfg: EvalConfig) -> int:
    resolve_device(cfg.device)  # fails before the checkpoint and data are read
    configure_storage(cfg.storage)
    if not cfg.checkpoint or not storage.exists(cfg.checkpoint):
        raise ConfigError(
            f"config error: key 'checkpoint': {cfg.checkpoint or '(empty)'} does not exist; give the checkpoint to "
            "evaluate (checkpoint=PATH or s3://...): `rrsis train --config configs/train/<model>.yaml` writes "
            "<output>/<run_name>/best.pt (grounding.yaml, danet_rrsisd.yaml, waterland_demo.yaml, ...)"
        )
    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt.model_name == "waterland":
        code = run_waterland_eval(cfg, ckpt)
    else:
        code = int(run_referring_eval(cfg, ckpt) or 0)
    report_run(cfg.output, config=to_dict(cfg), kind="eval")
    return code
