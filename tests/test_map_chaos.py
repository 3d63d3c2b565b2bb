"""Chaos: a map run whose Ray workers are SIGKILLed at random, every few seconds, until it ends, completes on
its own with the same bytes as a clean run and every tile once in the manifest.

The run is the real driver (`rrsis map` in a subprocess) on its own embedded Ray, so the processes killed are
that run's workers only (found in the driver's process tree by their Ray process titles), never the test
session's Ray. A kill waits for the run to have made progress since the previous one (a tile, commit or
product file more): on a loaded machine a restarted inference actor takes longer to load its model than the
kill interval, and killing it again before it mapped a batch would only prove that a run killed faster than
it can work never ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrsis.pipeline.commit import manifest_dataset
from rrsis.pipeline.manifest import read_table
from rrsis.pipeline.run import run_map
from tests.pipeline_data import map_config, tiny_checkpoint, write_scene

REPO = Path(__file__).resolve().parents[1]
#: The stages whose worker processes are killed: read (with planning), inference, refinement, write, products.
TARGETS = ("read_stage", "InferStage", "RefineStage", "write_stage", "scene_products", "quicklook_background")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def products(run_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every mosaic, tile, vector file, quicklook and stats file."""
    return {
        str(p.relative_to(run_dir)): _sha(p)
        for p in sorted(run_dir.rglob("*"))
        if (p.is_file() and p.suffix in (".tif", ".geojson", ".png")) or p.name == "stats.json"
    }


def descendants(root: int) -> list[int]:
    """Every process below `root` (from /proc: the parent of each process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def title(pid: int) -> str:
    """A Ray worker's process title (`ray::MapWorker(MapBatches(InferStage))`, `ray::MapBatches(write_stage)`)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def progress(run_root: Path) -> int:
    """Files the run has written so far that mark progress: tile sidecars, commit records, scene stats."""
    return sum(1 for p in run_root.rglob("*") if p.name.endswith((".tif.json", "stats.json")) or "_commits" in p.parts)


def stages_hit(titles: list[str]) -> set[str]:
    """The TARGETS stages named in these process titles."""
    return {t for t in TARGETS if any(t in title for title in titles)}


def stage_workers(driver: int) -> dict[int, str]:
    """The run's worker processes busy in (or holding) a map stage, with their titles."""
    found = {}
    for pid in descendants(driver):
        name = title(pid)
        if name.startswith("ray::") and any(t in name for t in TARGETS):
            found[pid] = name
    return found


@pytest.mark.slow
def test_random_worker_kills_every_few_seconds_end_complete_and_byte_identical(
    tmp_path: Path, ray_session: None
) -> None:
    (tmp_path / "scenes").mkdir()
    scenes = [write_scene(tmp_path / "scenes" / f"s{k}.tif", 136, 136, seed=k) for k in range(6)]
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    # 6 scenes x 36 tiles (32 px, 8 px overlap): 216 tiles, 4-tile batches
    args = [f"input=[{','.join(scenes)}]", f"infer.checkpoint={ckpt}", "tiling.tile_px=32", "tiling.overlap_px=8",
            "infer.batch_size=4", "outputs.report=false"]  # fmt: skip
    assert run_map(map_config(*args, f"output={tmp_path / 'clean'}")) == 0
    (clean,) = (tmp_path / "clean").iterdir()
    tiles = len(list(clean.rglob("tiles/*.tif")))
    assert tiles >= 200

    env = dict(os.environ, RAY_ADDRESS="", PYTHONPATH=str(REPO))  # its own embedded Ray, never the session's
    cmd = [sys.executable, "-m", "rrsis.cli", "map", *args, f"output={tmp_path / 'chaos'}"]
    log = (tmp_path / "chaos.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    rng = random.Random(22)
    kills: list[str] = []
    done_at_kill = -1
    deadline = time.monotonic() + 1200
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 4.0))
            done = progress(tmp_path / "chaos")
            workers = stage_workers(proc.pid)
            if not workers or done == done_at_kill:
                continue
            # a stage not killed yet goes first, so every stage that shows up is hit whatever the timing
            hit = stages_hit(kills)
            fresh = [w for w, name in workers.items() if not any(t in name for t in hit)]
            pid = rng.choice(sorted(fresh or workers))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills.append(workers[pid])
            done_at_kill = done
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    output = (tmp_path / "chaos.log").read_text()
    assert proc.returncode == 0, output[-4000:]
    killed = stages_hit(kills)
    print(f"{len(kills)} kills: {sorted(killed)}")
    # an actor stage and the write tasks at least. In the full suite the inference actor was twice never
    # seen in the run's process tree (only refine and write were hit); killing it is test_pipeline_map's r1.
    assert len(kills) >= 5 and "write_stage" in killed and killed & {"InferStage", "RefineStage"}, kills

    (chaos,) = (tmp_path / "chaos").iterdir()
    assert products(chaos) == products(clean)
    keys = manifest_dataset(str(chaos)).to_table().column("key").to_pylist()
    assert len(keys) == len(set(keys)) == tiles
    assert sorted(read_table(str(chaos / "manifest.parquet")).column("key").to_pylist()) == sorted(keys)
    summary = json.loads((chaos / "summary.json").read_text())
    assert (summary["scenes_ok"], summary["tiles"], summary["tiles_failed"]) == (6, tiles, 0)
    assert not read_table(str(chaos / "failures.parquet")).num_rows
