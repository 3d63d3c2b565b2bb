"""What `rrsis tune` prints while the search runs: one short line per trial event, in place of Ray's table.

Ray Tune's own console output (a status table of every trial, redrawn every few seconds) runs to hundreds of
lines for a small search; `rrsis tune` turns it off (`RunConfig(verbose=0)`, unless `rrsis --verbose`) and
prints through this callback instead: a trial's searched values when it starts, its metric and the best so
far after each epoch it reports, and how it ended. The run then ends on the results table sorted by the
metric and the best trial's config and checkpoint (`rrsis.train.tune.run_tune`).
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.experiment import Trial


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrialProgress(tune.Callback):
    """Prints `trial <id> ...` lines on the driver; `metric`/`mode` rank the best so far."""

    def __init__(self, metric: str, mode: str, epochs: int, space_keys: list[str]) -> None:
        self.metric, self.mode, self.epochs, self.space_keys = metric, mode, epochs, space_keys
        self.best: tuple[float, str] | None = None  # (score, trial id)

    def _better(self, score: float) -> bool:
        if math.isnan(score):
            return False
        if self.best is None:
            return True
        return score > self.best[0] if self.mode == "max" else score < self.best[0]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        params = ", ".join(f"{k}={_value(trial.config.get(k))}" for k in self.space_keys if k in trial.config)
        print(f"trial {trial.trial_id} started: {params}", flush=True)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        epoch = result.get("training_iteration", "?")
        score = result.get(self.metric)
        shown = [f"{self.metric}={_value(score)}"]
        if self.metric != "loss" and "loss" in result:
            shown.append(f"loss={_value(result['loss'])}")
        if isinstance(score, (int, float)) and self._better(float(score)):
            self.best = (float(score), trial.trial_id)
        best = "" if self.best is None else f" | best {_value(self.best[0])} (trial {self.best[1]})"
        print(f"trial {trial.trial_id} epoch {epoch}/{self.epochs}: {' '.join(shown)}{best}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        epochs = (trial.last_result or {}).get("training_iteration", 0)
        ended = "finished" if epochs >= self.epochs else "stopped by the scheduler"
        print(f"trial {trial.trial_id} {ended} after {epochs} epoch(s)", flush=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        print(f"trial {trial.trial_id} failed (its reason is logged at the end)", flush=True)
