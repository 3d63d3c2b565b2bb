"""`rrsis eval`: load a checkpoint and dispatch on its model name (water-land, else a referring model); then
`report.html` beside the metrics (`rrsis.report`)."""

from __future__ import annotations

from rrsis.checkpoints import load_checkpoint
from rrsis.config.eval import EvalConfig
from rrsis.config.load import to_dict
from rrsis.devices import resolve_device
from rrsis.evaluate.referring import run_referring_eval
from rrsis.evaluate.waterland import run_waterland_eval
from rrsis.report import report_run
from rrsis.session import configure_storage


def run_eval(cfg: EvalConfig) -> int:
    resolve_device(cfg.device)  # fails before the checkpoint and data are read
    configure_storage(cfg.storage)
    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt.model_name == "waterland":
        code = run_waterland_eval(cfg, ckpt)
    else:
        code = int(run_referring_eval(cfg, ckpt) or 0)
    report_run(cfg.output, config=to_dict(cfg), kind="eval")
    return code
