"""Dedicated cores for the CPU inference actors of an embedded Ray (`rrsis.pipeline.cores`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
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

        assert _affinity_in_thread(pin_then_unpin) == set(CORES)
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
    from rrsis.checkpoints import load_checkpoint, save_checkpoint
    from rrsis.pipeline.inputs import resolve_inputs
    from rrsis.pipeline.plan import plan_run
    from rrsis.pipeline.stages import InferStage, read_stage
    from tests.pipeline_data import tiny_checkpoint, write_scene

    scene = write_scene(tmp_path / "scene.tif", 64, 96)
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "model.pt"))
    ckpt.gate = "otsu:VV"  # a per-scene rule: the actor reads each scene in a background thread
    save_checkpoint(ckpt, str(tmp_path / "gated.pt"))
    resolved, _ = resolve_inputs([scene])
    _, rows, _ = plan_run(
        resolved, str(tmp_path / "run"), tile_px=64, overlap_px=0, requested_bands=[], model_bands=["VV", "VH"],
        in_bands=2,
    )  # fmt: skip
    batch = read_stage({k: np.asarray([r[k] for r in rows]) for k in rows[0]})
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
    assert seen["read thread"] == set(CORES)  # the scene's decimated read stays off the model's core


def _called(stage, batch) -> set[int]:  # type: ignore[no-untyped-def]
    out = stage(batch)
    assert out["prob"].shape == (len(batch["tile_id"]), 64, 64)
    return os.sched_getaffinity(0)


@needs_two_cores
@pytest.mark.slow
def test_embedded_ray_keeps_the_reserved_core_for_the_inference_actor(tmp_path: Path) -> None:
    """`connect_ray` on a fresh driver: Ray's processes start on the other cores, an actor claims the group."""
    script = f"""
import json, os, ray
from rrsis.config.map import MapConfig
from rrsis.pipeline import cores
from rrsis.pipeline.run import connect_ray

connect_ray(MapConfig(output={str(tmp_path)!r}))

@ray.remote(num_cpus=1)
class Claimer:
    def __init__(self, groups, lock_dir):
        self.cores = cores.CoreClaim(groups, lock_dir)

    def claim(self):
        self.cores.pin()
        return sorted(os.sched_getaffinity(0))

task = ray.remote(num_cpus=1)(lambda: sorted(os.sched_getaffinity(0)))
first = Claimer.remote(cores.RESERVED.groups, cores.RESERVED.lock_dir)
second = Claimer.remote(cores.RESERVED.groups, cores.RESERVED.lock_dir)
print(json.dumps({{
    "reserved": [list(g) for g in cores.RESERVED.groups], "others": list(cores.RESERVED.others),
    "driver": sorted(os.sched_getaffinity(0)), "task": ray.get(task.remote()),
    "first": ray.get(first.claim.remote()), "second": ray.get(second.claim.remote()),
    "wide": list(cores.all_cores()),
}}))
"""
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["reserved"] == [[CORES[0]]] and seen["others"] == CORES[1:]
    assert seen["driver"] == CORES[1:]  # the driver's own work stays off the model's core
    assert seen["task"] == CORES[1:]  # workers inherit the raylet's mask
    assert seen["first"] == [CORES[0]]
    assert seen["second"] == CORES[1:]  # one group for one actor of the pool; a second one claims nothing
    assert seen["wide"] == CORES  # what the last scene's products get


@needs_two_cores
def test_the_last_scenes_products_and_the_driver_get_every_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Products of a scene finished mid-run stay off the actors' cores; the last scene's run after the last
    forward, on every core, and a products worker goes back to where it was afterwards."""
    from rrsis.pipeline import build, cores
    from rrsis.pipeline.inputs import resolve_inputs
    from rrsis.pipeline.plan import plan_run
    from rrsis.pipeline.run import SceneProducts
    from tests.pipeline_data import map_config, write_scene

    scenes = [write_scene(tmp_path / f"s{i}.tif", 32, 32, seed=i) for i in range(2)]
    resolved, _ = resolve_inputs(scenes)
    plans, rows, _ = plan_run(
        resolved, str(tmp_path / "run"), tile_px=32, overlap_px=0, requested_bands=[], model_bands=["VV", "VH"],
        in_bands=2,
    )  # fmt: skip
    monkeypatch.setattr(cores, "RESERVED", cores.CoreReservation(((CORES[0],),), tuple(CORES[1:]), str(tmp_path)))
    monkeypatch.setattr(cores, "_before", set(CORES))
    started: list[tuple[str, tuple[int, ...], set[int]]] = []

    def products_task(plan, tiles, outputs, background, num_cpus, on_cores):  # type: ignore[no-untyped-def]
        started.append((plan.scene_id, on_cores, os.sched_getaffinity(0)))

    monkeypatch.setattr(build, "products_task", products_task)
    cfg = map_config(f"output={tmp_path}", "outputs.quicklook=false")

    def drive() -> None:
        cores.run_on(tuple(CORES[1:]))  # the driver during the run
        products = SceneProducts(plans, rows, cfg)
        for row in rows:
            products.add({**row, "status": "ok", "valid_px": 1})

    _affinity_in_thread(drive)
    assert [(s, c) for s, c, _ in started] == [(plans[0].scene_id, ()), (plans[1].scene_id, tuple(CORES))]
    assert started[0][2] == set(CORES[1:]) and started[1][2] == set(CORES)  # the driver, too

    monkeypatch.setattr(build, "scene_products", lambda *args: sorted(os.sched_getaffinity(0)))
    during: list[list[int]] = []
    after = _affinity_in_thread(lambda: during.append(build._products_on((CORES[0],), {}, [], {}, None)))
    assert during == [[CORES[0]]] and after == set(CORES)
