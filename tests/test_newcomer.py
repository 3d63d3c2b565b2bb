"""A newcomer runs every job of `rrsis --help` with its shipped config (only `output` set): it works, with no
Ray or OpenCV warning line, or it fails with one line that says what to do.

Covered elsewhere, not repeated here: every train and tune config (tests/test_shipped_train_configs.py), and
`rrsis map` on the shipped demo config (tests/test_quiet_console.py, which also checks its console).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rrsis.cli import main
from tests.test_quiet_console import warning_lines

REPO = Path(__file__).resolve().parents[1]
#: words of a line that says what to do
REMEDY = ("give ", "pass ", "set ", "train one with", "rrsis train", "lower ", "raise ", "rerun")


def _rrsis(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RRSIS_VERBOSE")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "rrsis.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _one_line_that_says_what_to_do(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("rrsis: ") and any(word in lines[0] for word in REMEDY), lines[0]
    return lines[0]


# fmt: off
FAILS_IN_ONE_LINE = [
    # the referring maps need a trained checkpoint: the line names the train command
    (["map", "--config", "configs/map/referring.yaml"], "rrsis train --config configs/train/grounding_tiny.yaml"),
    (["map", "--config", "configs/map/referring_danet.yaml"], "rrsis train --config configs/train/danet_tiny.yaml"),
    (["eval", "--config", "configs/eval/referring.yaml"], "key 'checkpoint'"),
    (["eval", "--config", "configs/eval/referring_dior_rsvg.yaml"], "key 'checkpoint'"),
    # submitting the shipped configs: their relative outputs would be lost on a cluster; no address given
    (["submit", "map", "--config", "configs/map/waterland.yaml"], "output=s3://"),
    (["submit", "train", "--config", "configs/train/waterland_tiny.yaml"], "output=s3://"),
    (["submit", "tune", "--config", "configs/tune/waterland_tiny.yaml"], "output=s3://"),
    (["submit", "eval", "--config", "configs/eval/waterland.yaml"], "output=s3://"),
    *[
        (["submit", "map", "--config", "configs/map/waterland.yaml", "--submit-config", f"configs/submit/{name}",
          "output=s3://bucket/runs"], "RAY_ADDRESS")
        for name in ("default.yaml", "image.yaml", "smoke.yaml")
    ],
    *[(["jobs", action], "RAY_ADDRESS") for action in ("list", "status", "logs", "stop")],
    (["report", "no/such/run"], "give the run folder"),
    # a budget that ASHA cannot keep
    (["tune", "--config", "configs/tune/waterland.yaml", "base.optim.epochs=1"], "lower grace_period"),
]
# fmt: on


@pytest.mark.parametrize(("argv", "says"), FAILS_IN_ONE_LINE, ids=[" ".join(a[:3]) for a, _ in FAILS_IN_ONE_LINE])
def test_a_job_that_cannot_run_here_says_what_to_do_in_one_line(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the configs name their files relative to the repository
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = [f"output={tmp_path / 'out'}"] if argv[0] in ("map", "eval", "tune") else []
    code = main([*argv, *out])
    captured = capsys.readouterr()
    line = _one_line_that_says_what_to_do(subprocess.CompletedProcess(argv, code, captured.out, captured.err))
    assert says in line, line
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("job", ["map", "train", "tune", "eval"])
def test_config_show_prints_every_shipped_config(
    job: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    for config in sorted((REPO / "configs" / job).glob("*.yaml")):
        if config.name.startswith("space_"):
            continue  # a tune search space, named by a tune config's `space`
        code = main(["config", "show", job, "--config", str(config)])
        captured = capsys.readouterr()
        assert code == 0 and captured.out.strip(), (config.name, captured.err[-500:])


WORKS = [
    ["map", "--config", "configs/map/sam_boxes.yaml"],
    ["eval", "--config", "configs/eval/waterland.yaml"],
]


@pytest.mark.slow
@pytest.mark.parametrize("argv", WORKS, ids=[" ".join(a[:3]) for a in WORKS])
def test_a_job_that_can_run_here_works_as_shipped(argv: list[str], tmp_path: Path) -> None:
    done = _rrsis(*argv, f"output={tmp_path}", timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert any(tmp_path.iterdir())
    assert warning_lines(output) == []  # no Ray or OpenCV warning lines either
