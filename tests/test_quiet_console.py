"""A normal run's console holds the project's own lines and Ray Data's progress only: no Ray or OpenCV warning
lines (they come back with `rrsis --verbose`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rrsis.session import QUIET_ENV, quiet_libraries

REPO = Path(__file__).resolve().parents[1]

#: rrsis's own log lines (rrsis.log format) and console summary
OWN = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING|ERROR) rrsis(\.[\w.]+)?: |^  \S|^rrsis[ :]")
#: Ray Data's progress and execution lines: INFO records of Ray's Python loggers
RAY_DATA_INFO = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\tINFO [\w.]+\.py:\d+ -- ")
#: a line a Ray worker printed, forwarded to the driver with its `(name pid=N)` prefix
FORWARDED = re.compile(r"^(\x1b\[\d+m)?\((?P<who>.*?pid=\d+[^)]*)\)(\x1b\[0m)? (?P<text>.*)$")


def foreign_lines(output: str) -> list[str]:
    """Every console line that is neither rrsis's own nor Ray Data's progress: Ray's warnings and C++ log lines
    (`[... E ...] core_worker.cc`), OpenCV's (`[ WARN:0@...] ... TIFF_Warning`), anything else. A worker's
    forwarded line counts unless its text is an rrsis line or a plain message of ours (no Ray/OpenCV marker)."""
    out = []
    for line in output.splitlines():
        if not line.strip() or OWN.match(line) or RAY_DATA_INFO.match(line):
            continue
        forwarded = FORWARDED.match(line)
        if forwarded and not re.search(r"WARN|ERROR| E |\.cc:|\.py:\d+", forwarded["text"]):
            continue  # an rrsis stage's own message printed in a worker
        out.append(line)
    return out


#: a Ray or OpenCV warning or error line, wherever it comes from (C++ log lines of any Ray process, forwarded
#: or not; Ray's Python loggers; OpenCV's logger and TIFF handler)
WARNING = re.compile(
    r"\[\d{4}-\d\d-\d\d [\d:,]+ [WEF] \d+ \d+\]|\t(WARNING|ERROR|CRITICAL) [\w.]+\.py:\d+ -- "
    r"|\[ ?(WARN|ERROR):|TIFF_Warning|Token authentication"
)


def warning_lines(output: str) -> list[str]:
    """Ray's and OpenCV's warning and error lines of a job's output (its own lines may be anything)."""
    return [line for line in output.splitlines() if WARNING.search(line)]


def test_the_line_filter_finds_ray_and_opencv_noise() -> None:
    noise = [
        "[2026-12-05 22:43:34,428 E 23916 23916] core_worker.cc:2465: Actor with class name: 'MapWorker' ...",
        "[ WARN:0@0.034] global grfmt_tiff.cpp:123 TIFF_Warning TIFFReadDirectory: Unknown field with tag 33550",
        "2026-12-05 22:43:12,000\tWARNING authentication_token_setup.py:86 -- Token authentication is enabled",
        "(MapWorker(MapBatches(InferStage)) pid=7) 2026-12-05 22:43:12,000\tWARNING worker.py:1 -- something",
    ]
    own = [
        "2026-12-05 22:43:33,271 INFO rrsis.map: run map-15caeecfc3f4: 9 scenes to map, 0 committed before",
        "2026-12-05 22:44:55,718\tINFO logging_progress.py:227 -- Active & requested resources: 2/4 CPU",
        "\x1b[36m(MapWorker(MapBatches(InferStage)) pid=24743)\x1b[0m scene measurements unavailable (a.tif: ...)",
        "  India_900498_S1Hand: water 10.565 km² (45.3 %); mosaic /tmp/x/mosaic.tif",
        "rrsis map map-15caeecfc3f4: ok; scenes 4/4 mapped",
    ]
    assert foreign_lines("\n".join(noise + own)) == noise
    assert warning_lines("\n".join(noise + own)) == noise
    gcs = "(pid=gcs_server) [2026-12-05 23:37:02,170 E 24723 24723] (gcs_server) gcs_actor_scheduler.cc:538: x"
    assert warning_lines(gcs) == [gcs] and warning_lines("model water gated by otsu:VV: kept below ...") == []


def test_quiet_libraries_sets_the_quiet_environment_unless_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RRSIS_VERBOSE", "1")
    quiet_libraries()
    assert not [name for name in QUIET_ENV if name in os.environ]
    monkeypatch.delenv("RRSIS_VERBOSE")
    quiet_libraries()
    assert os.environ["OPENCV_LOG_LEVEL"] == "ERROR"
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "DEBUG")  # a user's own value wins
    quiet_libraries()
    assert os.environ["OPENCV_LOG_LEVEL"] == "DEBUG"


@pytest.mark.slow
def test_the_shipped_demo_prints_no_ray_or_opencv_warning_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RRSIS_VERBOSE", *QUIET_ENV)}
    # as on a machine with AWS credentials in its environment (botocore announces them per client at INFO)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    for attempt in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "rrsis.cli", "map", "--config", "configs/map/waterland.yaml",
             f"output={tmp_path / str(attempt)}"],
            cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        assert "rrsis map map-" in done.stdout and "INFO streaming_executor.py" in done.stderr  # progress stays
        if not is_ray_teardown_crash(foreign_lines(output)):
            break  # one more run only after Ray's own crash on a released actor's exit, never after anything else
    assert foreign_lines(output) == []


#: Ray's C++ crash dump (`logging.cc`) of one worker whose OpenCensus harvester thread met a mutex already torn
#: down while the process exited (ray-project/ray#36885 and #36906, "OpenCensus segfault upon shutdown"): seen
#: once in the full suite here (2026-12-06, a released RefineStage actor after a successful run), not in 3 runs
#: of this test alone
RAY_TEARDOWN_CRASH = re.compile(r"logging\.cc:\d+: (\*\*\* SIGSEGV received|PC: @|    @ )")


def is_ray_teardown_crash(lines: list[str]) -> bool:
    """True when every foreign line is part of one Ray worker's SIGSEGV dump that names OpenCensus."""
    return (
        bool(lines)
        and all(RAY_TEARDOWN_CRASH.search(line) for line in lines)
        and any("opencensus" in line for line in lines)
    )


def test_only_ray_s_own_teardown_crash_earns_a_second_run() -> None:
    prefix = "\x1b[36m(MapWorker(MapBatches(RefineStage)) pid=4624)\x1b[0m [2026-12-06 20:09:10,491 E 4624 4885] "
    crash = [
        prefix + "logging.cc:474: *** SIGSEGV received at time=1796587750 on cpu 1 ***",
        prefix + "logging.cc:474: PC: @     0x7f8b77e2a3df  (unknown)  absl::lts_20230802::Enqueue()",
        prefix + "logging.cc:474:     @     0x7f8b777c2022   144  opencensus::stats::DeltaProducer::RunHarvesterLoop()",
    ]
    assert is_ray_teardown_crash(crash)
    assert not is_ray_teardown_crash([])
    assert not is_ray_teardown_crash([*crash, prefix + "core_worker.cc:812: something else"])
    assert not is_ray_teardown_crash([line.replace("opencensus", "ray") for line in crash])
