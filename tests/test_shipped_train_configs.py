"""Every shipped train config, run as is (only `output` and a one-epoch time budget set): it trains, or it
fails in one line that names the key to set (the big datasets and SAM weights are not on this machine)."""

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
