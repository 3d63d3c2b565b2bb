"""`rrsis tune` checks on the driver before any trial: missing data, weights and text encoders, a metric the
trials never report, and trials no node can hold are each one line and exit 2; a failing trial is reported
with its own reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrsis.cli import main
from rrsis.errors import ConfigError, InputError
from rrsis.train.preflight import check_fits
from rrsis.train.tune import trial_reason

REPO = Path(__file__).resolve().parents[1]
TUNE = REPO / "configs" / "tune"
TINY_JSONL = REPO / "data" / "samples" / "referring_tiny.jsonl"


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rrsis:")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("danet.yaml", "base.data.root"),
        ("grounding.yaml", "base.data.root"),
        ("sam_decoder.yaml", "base.model.sam.checkpoint"),
    ],
)
def test_shipped_configs_without_their_data_fail_in_one_line(
    config: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tune", "-c", str(TUNE / config), f"output={tmp_path}"]) == 2
    assert f"key '{key}'" in _one_line(capsys)
    assert not any(tmp_path.iterdir())  # nothing started


def test_missing_text_encoder_and_unreported_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tune", "-c", str(TUNE / "danet.yaml"), f"output={tmp_path}", "base.data.format=jsonl"]
    argv += [f"base.data.root={TINY_JSONL}", "base.train.use_gpu=false", "cpus_per_trial=1"]
    assert main([*argv, f"base.model.danet.text_encoder={tmp_path / 'no_bert'}"]) == 2
    assert "key 'base.model.danet.text_encoder'" in _one_line(capsys)
    sam = ["tune", "-c", str(TUNE / "sam_decoder_tiny.yaml"), f"output={tmp_path}", "metric=val_miou", "mode=max"]
    assert main([*sam, f"base.data.root={REPO / 'data' / 'samples' / 'sen1floods11'}"]) == 2
    assert "needs a validation split" in _one_line(capsys)


def test_unschedulable_trial_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tune", "-c", str(TUNE / "danet.yaml"), f"output={tmp_path}", "base.data.format=jsonl"]
    assert main([*argv, f"base.data.root={TINY_JSONL}"]) == 2  # the shipped config wants a GPU per trial
    assert "needs 1 GPU(s)" in _one_line(capsys)
    with pytest.raises(ConfigError, match="cpus_per_trial=2 or less"):
        check_fits(4, 0, [{"CPU": 2.0}, {"CPU": 1.0}])
    check_fits(2, 1, [{"CPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}])


def test_trial_reason_unwraps_to_the_first_line() -> None:
    inner = InputError("data.root='x': no sample")
    outer = RuntimeError("Ray wrapper\nTraceback ...\nInputError: data.root='x': no sample")
    outer.__cause__ = inner
    assert trial_reason(outer) == "data.root='x': no sample"
    assert trial_reason(KeyError("val_box_acc@0.5")) == "KeyError: 'val_box_acc@0.5'"


@pytest.mark.slow
def test_failing_trials_report_their_own_reason(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("data.train_fraction: {choice: [0.5]}\n")  # valid schema, refused when a trial builds
    argv = ["tune", "-c", str(TUNE / "waterland_tiny.yaml"), f"output={tmp_path}", f"space={space}"]
    argv += [f"base.data.root={REPO / 'data' / 'samples' / 'sen1floods11'}", "num_samples=1", "scheduler=fifo"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "all 1 trials failed" in line and "only model.name=sam_decoder subsamples its data" in line, line
