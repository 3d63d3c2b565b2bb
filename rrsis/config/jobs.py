"""The registry of job configs: job name -> schema dataclass, and job name -> runner function."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rrsis.errors import ConfigError

# job -> (schema "module:Class", runner "module:function", one-line help)
JOBS: dict[str, tuple[str, str, str]] = {
    "map": ("rrsis.config.map:MapConfig", "rrsis.pipeline.run:run_map", "map scenes into mask tiles, COG, vectors"),
    "train": ("rrsis.config.train:TrainConfig", "rrsis.train.run:run_train", "train a model (plain loop or Ray Train)"),
    "tune": ("rrsis.config.tune:TuneConfig", "rrsis.train.tune:run_tune", "hyper-parameter search with Ray Tune"),
    "eval": ("rrsis.config.eval:EvalConfig", "rrsis.evaluate.run:run_eval", "evaluate a checkpoint on a dataset split"),
    "submit": ("rrsis.config.submit:SubmitConfig", "rrsis.submit.client:run_submit", "submit a job to a Ray cluster"),
}


def _resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def schema_for(job: str) -> type:
    if job not in JOBS:
        raise ConfigError(f"unknown job {job!r}; allowed: {', '.join(JOBS)}")
    return _resolve(JOBS[job][0])  # type: ignore[no-any-return]


def runner_for(job: str) -> Callable[[Any], int]:
    return _resolve(JOBS[job][1])  # type: ignore[no-any-return]
