"""Dedicated cores for the CPU inference actors of an embedded Ray (`rrsis.pipeline.cores`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rrsis.pipeline.cores import CoreClaim, split_cores

ROOT = Path(__file__).resolve().parents[1]
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two_cores = pytest.mark.skipif(len(CORES) < 2, reason="needs a machine with at least two usable cores")


def test_split_cores_leaves_the_rest_for_everything_else() -> None:
    assert split_cores([0, 1], 1, 1) == (((0,),), (1,))
    assert split_cores([3, 2, 1, 0], 2, 1) == (((0,), (1,)), (2, 3))
    assert split_cores([2, 5, 7], 1, 2) == (((2, 5),), (7,))
    assert split_cores([0, 1], 2, 1) is None  # nothing left for reads, writes, the driver: no reservation
    assert split_cores([0, 1, 2, 3], 1, 4) is None
    assert split_cores([0], 1, 1) is None
    assert split_cores([0, 1], 0, 1) is None


def _affinity_in_thread(fn) -> set[int]:  # type: ignore[no-untyped-def]
    seen: list[set[int]] = []

    def run() -> None:
        fn()
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


@needs_two_cores
def test_claim_takes_a_free_group_and_pins_only_the_calling_thread(tmp_path: Path) -> None:
    groups = ((CORES[0],), (CORES[1],))
    first, second, third = CoreClaim(groups, str(tmp_path)), CoreClaim(groups, str(tmp_path)), None
    try:
        assert first.cores == (CORES[0],) and second.cores == (CORES[1],)
        third = CoreClaim(groups, str(tmp_path))
        assert third.cores == ()  # every group held: runs where it was started
        assert _affinity_in_thread(third.pin) == set(CORES)
        assert _affinity_in_thread(first.pin) == {CORES[0]}
        assert os.sched_getaffinity(0) == set(CORES)  # this thread untouched

        def pin_then_unpin() -> None:
            second.pin()
            second.unpin()

        assert _affinity_in_thread(pin_then_unpin) == set(CORES) - {CORES[1]}  # a helper: off the model's core
        first.release()
        fourth = CoreClaim(groups, str(tmp_path))
        assert fourth.cores == (CORES[0],)  # a released group is claimed again
        fourth.release()
    finally:
        for claim in (first, second, third):
            if claim is not None:
                claim.release()


@needs_two_cores
def test_a_dead_actors_group_is_free_for_its_replacement(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from rrsis.pipeline.cores import CoreClaim\n"
            f"c = CoreClaim((({CORES[0]},),), {str(tmp_path)!r}); print(c.cores, flush=True); time.sleep(60)"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == f"({CORES[0]},)"
        assert CoreClaim(((CORES[0],),), str(tmp_path)).cores == ()  # held by the live process
        holder.kill()  # as a SIGKILLed actor: no cleanup runs, the kernel drops its lock
        holder.wait(timeout=10)
        claim = CoreClaim(((CORES[0],),), str(tmp_path))
        assert claim.cores == (CORES[0],)
        claim.release()
    finally:
        holder.kill()
        if holder.stdout is not None:
            holder.stdout.close()


@needs_two_cores
def test_infer_stage_runs_its_model_on_the_claimed_core_and_reads_elsewhere(tmp_path: Path) -> None:
    from rrsis.pipeline.stages import InferStage
    from tests.pipeline_data import gated_checkpoint, read_tiles, tiny_checkpoint, write_scene

    scene = write_scene(tmp_path / "scene.tif", 64, 96)
    # a per-scene rule (the gate): the actor reads each scene in a background thread
    gated_checkpoint(tiny_checkpoint(tmp_path / "model.pt"), tmp_path / "gated.pt")
    batch = read_tiles([scene], tmp_path / "run")
    seen: dict[str, set[int]] = {}

    def build_and_call() -> None:
        stage = InferStage(
            str(tmp_path / "gated.pt"), "cpu", 1, scenes=[(scene, "1,2")], cores=((CORES[0],),),
            core_lock_dir=str(tmp_path),
        )  # fmt: skip
        seen["constructor"] = os.sched_getaffinity(0)
        assert stage.measurer.pool is not None
        seen["read thread"] = stage.measurer.pool.submit(os.sched_getaffinity, 0).result()
        caller = threading.Thread(target=lambda: seen.update(call=_called(stage, dict(batch))))
        caller.start()  # Ray calls the actor from a thread of its own
        caller.join()
        stage.cores.release()

    _affinity_in_thread(build_and_call)
    assert seen["constructor"] == {CORES[0]}  # the model's load
    assert seen["call"] == {CORES[0]}  # the forwards
    assert seen["read thread"] == set(CORES[1:])  # the scene's decimated read stays off the model's core


def _called(stage, batch) -> set[int]:  # type: ignore[no-untyped-def]
    out = stage(batch)
    assert out["prob"].shape == (len(batch["tile_id"]), 64, 64)
    return os.sched_getaffinity(0)


@needs_two_cores
@pytest.mark.slow
def test_embedded_ray_keeps_the_claimed_core_for_the_inference_actor(tmp_path: Path) -> None:
    """An embedded Ray started on every core; a reservation of one core; once an actor claims it, the fence
    moves the driver, raylet and every worker to the other cores; `lift` gives them all back."""
    script = """
import json, os, time, ray
from rrsis.config.common import RayConfig
from rrsis.pipeline import cores
from rrsis.session import EMBEDDED_MIN_CPUS, connect_ray

assert connect_ray(RayConfig(), min_cpus=EMBEDDED_MIN_CPUS) == "embedded"
res = cores.reserve(1, 1)
fence = cores.Fence(res, interval_s=0.1)
fence.start()

@ray.remote(num_cpus=1)
class Claimer:
    def __init__(self, groups, lock_dir):
        self.cores = cores.CoreClaim(groups, lock_dir)

    def claim(self):
        self.cores.pin()
        return [list(self.cores.cores), sorted(os.sched_getaffinity(0))]

task = ray.remote(num_cpus=1)(lambda: sorted(os.sched_getaffinity(0)))
seen = {"reserved": [list(g) for g in res.groups], "others": list(res.others), "task before": ray.get(task.remote())}
first = Claimer.remote(res.groups, res.lock_dir)
seen["first"] = ray.get(first.claim.remote())  # constructed (and claimed) before the second one exists
second = Claimer.remote(res.groups, res.lock_dir)
seen["second"] = ray.get(second.claim.remote())
time.sleep(1.0)  # a few fence rounds
seen["driver"], seen["task"] = sorted(os.sched_getaffinity(0)), ray.get(task.remote())
seen["first again"] = ray.get(first.claim.remote())
fence.lift()
seen["driver after"], seen["task after"] = sorted(os.sched_getaffinity(0)), ray.get(task.remote())
print(json.dumps(seen))
"""
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["reserved"] == [[CORES[0]]] and seen["others"] == CORES[1:]
    assert seen["task before"] == CORES  # Ray starts on every core
    assert seen["first"] == seen["first again"] == [[CORES[0]], [CORES[0]]]  # the fence leaves the actor alone
    assert seen["second"][0] == []  # one group for one actor of the pool: a second one claims nothing...
    assert seen["driver"] == CORES[1:] and seen["task"] == CORES[1:]  # ...and the fence moved everyone else
    assert seen["driver after"] == CORES and seen["task after"] == CORES


def test_the_fence_is_lifted_just_before_the_last_scenes_products(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Products of a scene finished mid-run start with the fence up; the last scene's start after the last
    forward, so the fence (SceneTracker's `on_last`) comes down first, once."""
    from rrsis.pipeline import tile_run
    from rrsis.pipeline.inputs import resolve_inputs
    from rrsis.pipeline.plan import PlanArgs, expand_scene, scene_row
    from tests.pipeline_data import map_config, write_scene

    scenes = [write_scene(tmp_path / f"s{i}.tif", 32, 32, seed=i) for i in range(2)]
    resolved, _ = resolve_inputs(scenes)
    plan = PlanArgs(str(tmp_path / "run"), 32, 0, (), ("VV", "VH"), 2)
    rows = [row for scene in resolved for row in expand_scene(scene_row(scene, False), plan=plan)]
    events: list[str] = []
    monkeypatch.setattr(tile_run, "products_task", lambda scene, *args: events.append(f"products {scene['scene_id']}"))
    cfg = map_config(f"output={tmp_path}", "outputs.quicklook=false")
    spec = tile_run.TileSpec(cfg, "m", plan, "water")
    tracker = tile_run.SceneTracker(plan.run_prefix, tile_run.tile_task(spec), [s.scene_id for s in resolved])
    tracker.on_last = lambda: events.append("lift")
    for row in rows:
        tracker.add({**row, "status": "written", "valid_px": 1})
    ids = [s.scene_id for s in resolved]
    assert events == [f"products {ids[0]}", "lift", f"products {ids[1]}"]


def test_claimed_pids_names_live_holders_only(tmp_path: Path) -> None:
    from rrsis.pipeline.cores import claimed_pids

    groups = ((0,), (1,))
    claim = CoreClaim(groups, str(tmp_path))
    assert claimed_pids(str(tmp_path)) == ({os.getpid()} if claim.cores else set())
    claim.release()
    assert claimed_pids(str(tmp_path)) == set()  # the file stays, its lock is gone
