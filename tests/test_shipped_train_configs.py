"""Every shipped train and tune config, run as is (only `output` and a one-epoch time budget set; tune: one
sample of the space): it trains, or it fails in one line that names the key to set (the big datasets and SAM
weights are not on this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrsis.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_train_config_runs_or_fails_in_one_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # configs name their data relative to the repository
    code = main(["train", "-c", str(config), f"output={tmp_path}", "optim.max_minutes=0.0001"])
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:
        assert (tmp_path / config.stem).is_dir() or any(tmp_path.iterdir())
        return
    assert code == 2 and len(err) == 1 and err[0].startswith("rrsis: "), err
    assert "key '" in err[0] or "not found" in err[0] or "no such file" in err[0], err[0]


TUNE_CONFIGS = sorted(c for c in (REPO / "configs" / "tune").glob("*.yaml") if not c.stem.startswith("space_"))


@pytest.mark.slow
@pytest.mark.parametrize("config", TUNE_CONFIGS, ids=[c.stem for c in TUNE_CONFIGS])
def test_tune_config_runs_or_fails_in_one_line(
    config: Path, ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shipped tune config as is, but for a one-epoch budget per trial and one sample of its space (a grid
    still runs each of its points): it ends on the best trial's line, or fails in one line naming the key."""
    monkeypatch.chdir(REPO)
    argv = ["tune", "-c", str(config), f"output={tmp_path}", "base.optim.max_minutes=0.0001", "num_samples=1"]
    code = main(argv)
    captured = capsys.readouterr()
    if code == 0:
        assert captured.out.splitlines()[-1].startswith("best trial {"), captured.out[-2000:]
        assert "Trial status" not in captured.out  # Ray's own table is off
        return
    err = [line for line in captured.err.splitlines() if line.startswith("rrsis:")]
    assert code == 2 and len(err) == 1, captured.err[-2000:]
    assert "key '" in err[0], err[0]
