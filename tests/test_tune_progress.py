"""`rrsis tune`'s progress lines (`TrialProgress`) from trial events, without Ray running."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rrsis.train.tune_progress import TrialProgress


def _trial(trial_id: str, last: dict[str, float] | None = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"optim.lr": 0.00123456, "seed": 0}, last_result=last or {})


@pytest.mark.parametrize(
    ("mode", "scores", "best"),
    [
        ("max", [0.2, float("nan"), 0.5, 0.4], "0.5 (trial t2)"),
        ("min", [0.2, float("nan"), 0.5, 0.1], "0.1 (trial t3)"),
    ],
)
def test_one_line_per_result_with_the_best_so_far(
    mode: str, scores: list[float], best: str, capsys: pytest.CaptureFixture[str]
) -> None:
    progress = TrialProgress("val_miou", mode, epochs=4, space_keys=["optim.lr"])
    progress.on_trial_start(0, [], _trial("t0"))
    for i, score in enumerate(scores):
        progress.on_trial_result(0, [], _trial(f"t{i}"), {"training_iteration": 2, "val_miou": score, "loss": 1.5})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "trial t0 started: optim.lr=0.001235"
    assert lines[1] == "trial t0 epoch 2/4: val_miou=0.2 loss=1.5 | best 0.2 (trial t0)"
    assert lines[2].startswith("trial t1 epoch 2/4: val_miou=nan") and lines[2].endswith("best 0.2 (trial t0)")
    assert lines[-1].endswith(f"| best {best}")


def test_end_lines_say_finished_stopped_or_failed(capsys: pytest.CaptureFixture[str]) -> None:
    progress = TrialProgress("loss", "min", epochs=3, space_keys=[])
    progress.on_trial_complete(0, [], _trial("a", {"training_iteration": 3}))
    progress.on_trial_complete(0, [], _trial("b", {"training_iteration": 1}))
    progress.on_trial_error(0, [], _trial("c"))
    assert capsys.readouterr().out.splitlines() == [
        "trial a finished after 3 epoch(s)",
        "trial b stopped by the scheduler after 1 epoch(s)",
        "trial c failed (its reason is logged at the end)",
    ]
