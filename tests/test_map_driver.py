"""The one map driver: the same failure rows under every task, per-scene commits that a rerun skips without
reading their tiles, one driver per run folder (the lease), and run ids that ignore resource settings."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rrsis import storage
from rrsis.config.load import load_config
from rrsis.config.map import MapConfig
from rrsis.errors import RrsisError
from rrsis.pipeline.commit import committed_scenes, manifest_dataset
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.lease import LEASE, LeaseHeld, RunLease
from rrsis.pipeline.manifest import read_table
from rrsis.pipeline.run import run_map
from rrsis.pipeline.task_waterland import run_id_for
from tests.danet_tiny import save_tiny_danet
from tests.pipeline_data import map_config, tiny_checkpoint, write_scene
from tests.test_map_referring import grounding_checkpoint

REPO = Path(__file__).resolve().parents[1]
TILING = ["tiling.tile_px=32", "tiling.overlap_px=8", "infer.batch_size=4"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(run_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every product and tile (sidecars and run tables hold timings/attempts)."""
    return {
        str(p.relative_to(run_dir)): _sha(p)
        for p in sorted(run_dir.rglob("*"))
        if (p.is_file() and p.suffix in (".tif", ".geojson", ".png")) or p.name == "stats.json"
    }


def _rgb_scene(path: Path, size: int = 64) -> str:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 255, (3, size, size), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32630", "transform": from_origin(500000.0, 4200000.0, 10.0, 10.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def _bad_scenes(root: Path) -> list[str]:
    """Three scenes no task can map: missing, not a GeoTIFF, and without a CRS."""
    corrupt = root / "corrupt.tif"
    corrupt.write_bytes(b"this is not a GeoTIFF" * 50)
    nocrs = write_scene(root / "nocrs.tif", 30, 30, bands=3, crs=None)
    return [str(root / "gone" / "missing.tif"), str(corrupt), nocrs]


def _failure_rows(run_dir: Path) -> set[tuple[str, str, str, str]]:
    rows = read_table(str(run_dir / "failures.parquet")).to_pylist()
    return {(r["scene_id"], r["scene_uri"], r["stage"], r["reason"]) for r in rows if not r["tile_id"]}


def _all_failure_rows(run_dir: Path) -> set[tuple[str, str, str, str]]:
    rows = read_table(str(run_dir / "failures.parquet")).to_pylist()
    return {(r["scene_id"], r["tile_id"], r["stage"], r["reason"]) for r in rows}


@pytest.mark.slow
def test_every_task_gives_the_same_failure_rows_for_the_same_bad_scenes(tmp_path: Path, ray_session: None) -> None:
    """waterland, boxes, referring (PSLG-SAM) and referring (DANet): each bad scene is one failure row with
    the same stage and reason, and each task's good scene is still mapped (exit 1: something failed)."""
    bad = _bad_scenes(tmp_path)
    rgb = _rgb_scene(tmp_path / "rgb.tif")
    sar = write_scene(tmp_path / "sar.tif", 40, 40, seed=1)
    (tmp_path / "boxes.csv").write_text("id,x1,y1,x2,y2\nb1,10,10,40,40\n")
    danet = str(tmp_path / "danet.pt")
    save_tiny_danet(danet)
    common = ["infer.device=cpu", "infer.torch_threads=1", "outputs.quicklook=false"]
    tasks = {
        "waterland": (sar, ["task=waterland", f"infer.checkpoint={tiny_checkpoint(tmp_path / 'wl.pt')}", *TILING]),
        "boxes": (rgb, ["task=boxes", f"boxes.path={tmp_path / 'boxes.csv'}", "boxes.sam.model_type=tiny",
                        "tiling.tile_px=64", "tiling.overlap_px=0"]),
        "referring": (rgb, ["task=referring", f"referring.checkpoint={grounding_checkpoint(tmp_path / 'g.pt')}",
                            "query=the field", "referring.min_score=0.0", "boxes.sam.model_type=tiny",
                            "tiling.tile_px=64", "tiling.overlap_px=0"]),
        "danet": (rgb, ["task=referring", "method=danet", f"referring.danet={danet}", "query=the field",
                        "tiling.tile_px=64", "tiling.overlap_px=16"]),
    }  # fmt: skip
    seen = {}
    for name, (good, extra) in tasks.items():
        output = tmp_path / f"out_{name}"
        cfg = map_config(f"input=[{good},{','.join(bad)}]", f"output={output}", *common, *extra)
        assert run_map(cfg) == 1, name
        (run_dir,) = [p for p in output.iterdir() if p.is_dir()]
        rows = _failure_rows(run_dir)
        assert not [r for r in rows if r[0] in ("rgb", "sar")], (name, rows)  # the good scene was mapped
        seen[name] = rows
    expected = seen["waterland"]
    assert {r[2] for r in expected} <= {"input", "plan"} and len(expected) == 3
    assert all("\n" not in r[3] and "\x1b" not in r[3] for r in expected)  # one plain line each
    reasons = " | ".join(r[3] for r in expected)
    assert "missing.tif" in reasons and "corrupt.tif" in reasons and "no CRS" in reasons
    for name, rows in seen.items():
        assert rows == expected, name


def _many_scenes(root: Path, count: int, size: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    return [write_scene(root / f"s{k}.tif", size, size, seed=k) for k in range(count)]


def _cli(*overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "rrsis.cli", "map", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ray_env() -> dict[str, str]:
    import ray

    return dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))


def _kill_after_a_commit(
    args: list[str], output: Path, folder: str, scenes: int, wait_s: float
) -> tuple[Path, list[str]]:
    """`rrsis map` in a process of its own, SIGKILLed once a scene is committed; once the dead driver's
    in-flight tasks stop landing, the committed scenes' `folder` (tiles/, boxes/) is moved away to
    `<folder>.away`: a rerun that read any of it would find nothing. Returns the run and the committed ids."""
    proc = _cli(*args, f"output={output}", env=_ray_env())
    deadline = time.monotonic() + wait_s
    while proc.poll() is None and time.monotonic() < deadline and not list(output.glob("*/_commits/*.json")):
        time.sleep(0.02)
    assert proc.poll() is None, "the driver finished before a kill between two commits"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = output.iterdir()
    committed = sorted(committed_scenes(str(run)))
    assert 0 < len(committed) < scenes
    settled = -1
    while settled != len(list(run.rglob(f"{folder}/*.tif.json"))):  # in-flight tasks of the dead driver may land
        settled = len(list(run.rglob(f"{folder}/*.tif.json")))
        time.sleep(2)
    for scene_id in committed:
        (run / scene_id / folder).rename(run / scene_id / f"{folder}.away")
    return run, committed


@pytest.mark.slow
def test_driver_killed_after_commits_rerun_reads_no_tile_of_committed_scenes(tmp_path: Path, ray_session: None) -> None:
    scenes = _many_scenes(tmp_path / "scenes", 6, 120)
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    args = [f"input=[{','.join(scenes)}]", f"infer.checkpoint={ckpt}", *TILING, "wave_scenes=2"]  # 3 waves
    assert run_map(map_config(*args, f"output={tmp_path / 'clean'}")) == 0
    (clean,) = (tmp_path / "clean").iterdir()

    output = tmp_path / "killed"
    run, committed = _kill_after_a_commit(args, output, "tiles", 6, 240)
    in_flight_tiles = len([p for p in run.rglob("tiles/*.tif.json")])
    assert run_map(map_config(*args, f"output={output}")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["scenes_resumed"] == len(committed)
    assert summary["tiles_verified"] <= in_flight_tiles  # the only tile reads: in-flight scenes' sidecars
    for scene_id in committed:
        assert not (run / scene_id / "tiles").exists()  # neither read nor recomputed
        (run / scene_id / "tiles.away").rename(run / scene_id / "tiles")
    assert _outputs(run) == _outputs(clean)
    manifest = manifest_dataset(str(run)).to_table()
    keys = manifest.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == len(list(clean.rglob("tiles/*.tif")))
    assert read_table(str(run / "manifest.parquet")).num_rows == len(keys)
    assert summary["tiles"] == len(keys) and summary["scenes_ok"] == 6

    # verify=full re-checks every tile, committed scenes included: nothing to recompute, everything verified
    assert run_map(map_config(*args, f"output={output}", "verify=full")) == 0
    full = json.loads((run / "summary.json").read_text())
    assert (full["scenes_resumed"], full["tiles_verified"], full["tiles_computed"]) == (0, len(keys), 0)
    assert _outputs(run) == _outputs(clean)


@pytest.mark.slow
def test_boxes_driver_killed_after_commits_rerun_reads_no_group_of_committed_scenes(
    tmp_path: Path, ray_session: None
) -> None:
    """The boxes task on the shared executor: per-scene commits, and a rerun that skips committed scenes
    without reading any of their groups, verifies only the in-flight ones and ends byte-identical."""
    root = tmp_path / "scenes"
    root.mkdir()
    scenes = [_rgb_scene(root / f"rgb{k}.tif", size=128) for k in range(6)]
    (tmp_path / "boxes.csv").write_text("id,x1,y1,x2,y2\nb1,10,10,40,40\nb2,70,70,100,100\nfar,500,500,520,520\n")
    args = [f"input=[{','.join(scenes)}]", "task=boxes", f"boxes.path={tmp_path / 'boxes.csv'}",
            "boxes.sam.model_type=tiny", "tiling.tile_px=64", "tiling.overlap_px=0", "infer.device=cpu",
            "infer.torch_threads=1", "outputs.quicklook=false", "wave_scenes=2"]  # fmt: skip
    assert run_map(map_config(*args, f"output={tmp_path / 'clean'}")) == 1  # box "far" is outside every scene
    (clean,) = (tmp_path / "clean").iterdir()
    expected_failures = _all_failure_rows(clean)
    groups = sorted(p.relative_to(clean) for p in clean.rglob("boxes/*.tif"))
    assert len(groups) == 12  # two groups per scene: b1 in tile r0 c0, b2 in tile r1 c1

    output = tmp_path / "killed"
    run, committed = _kill_after_a_commit(args, output, "boxes", 6, 400)
    in_flight_boxes = 2 * len(list(run.rglob("boxes/*.tif.json")))  # two boxes per written group
    assert run_map(map_config(*args, f"output={output}")) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["scenes_resumed"] == len(committed) and summary["scenes_ok"] == 6
    assert summary["boxes_verified"] <= in_flight_boxes  # the only group reads: in-flight scenes' sidecars
    assert summary["boxes_computed"] == 12 - 2 * len(committed) - summary["boxes_verified"]
    for scene_id in committed:
        assert not (run / scene_id / "boxes").exists()  # neither read nor recomputed
        (run / scene_id / "boxes.away").rename(run / scene_id / "boxes")
    assert _outputs(run) == _outputs(clean)
    rows = read_table(str(run / "manifest.parquet")).to_pylist()
    assert sorted((r["scene_id"], r["box_id"]) for r in rows) == [
        (f"rgb{k}", b) for k in range(6) for b in ("b1", "b2")
    ]
    failures = _all_failure_rows(run)
    assert failures == expected_failures  # "far" of every scene, committed ones included (from their records)
    assert len([f for f in failures if f[1] == "far"]) == 6


@pytest.mark.slow
def test_a_second_driver_on_a_run_in_progress_exits_2_with_one_line(tmp_path: Path, ray_session: None) -> None:
    scenes = _many_scenes(tmp_path / "scenes", 8, 256)
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    args = [f"input=[{','.join(scenes)}]", f"infer.checkpoint={ckpt}", f"output={tmp_path / 'out'}", *TILING]
    first = _cli(*args, env=_ray_env())
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob(f"*/{LEASE}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-m", "rrsis.cli", "map", *args], cwd=REPO, env=_ray_env(), capture_output=True, text=True
    )
    running = first.poll() is None
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert running, "the first driver ended before the second one started"
    assert second.returncode == 2, second.stderr[-2000:]
    lines = [line for line in (second.stdout + second.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "is in progress: held by host" in lines[0] and f"pid {first.pid}" in lines[0] and "since" in lines[0]


def test_lease_refuses_a_live_holder_and_takes_over_a_stale_or_dead_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = str(tmp_path / "run")
    clock = [1000.0]
    with RunLease(run, stale_s=60, now=lambda: clock[0]) as held:
        with pytest.raises(LeaseHeld, match=r"in progress: held by host .* pid \d+ since .*lease_stale_s"):
            RunLease(run, stale_s=60, now=lambda: clock[0]).acquire()
        clock[0] += 61  # the holder stopped refreshing: stale
        taker = RunLease(run, stale_s=60, now=lambda: clock[0])
        taker.acquire()
        assert "took over the lease" in caplog.text
        assert not held.refresh() and "took over" in held.lost  # the old holder learns it lost the run
        with pytest.raises(RrsisError, match="another driver took over"):
            held.check()
    assert json.loads(storage.get_bytes(f"{run}/{LEASE}"))["token"] == taker.token  # the loser released nothing
    # a holder on this machine whose process is gone is stale at once
    dead = {"host": os.uname().nodename, "pid": 2**22 + 7, "since": 0, "refreshed": clock[0], "token": "x"}
    storage.put_bytes(f"{run}/{LEASE}", json.dumps(dead).encode())
    with RunLease(run, stale_s=60, now=lambda: clock[0]):
        pass
    assert not (tmp_path / "run" / LEASE).exists()  # released on exit


def test_lease_on_s3_is_a_conditional_write(s3_bucket: str) -> None:
    run = f"s3://{s3_bucket}/runs/r1"
    with RunLease(run, stale_s=60) as lease:
        assert lease.refresh()
        with pytest.raises(LeaseHeld, match="in progress"):
            RunLease(run, stale_s=60).acquire()
    assert not storage.exists(f"{run}/{LEASE}")


def test_run_id_ignores_resource_settings(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "a.tif", 20, 20)
    scenes, _ = resolve_inputs([scene])
    base = map_config(f"input=[{scene}]")
    resources = map_config(
        f"input=[{scene}]", "refine.num_cpus=0.5", "refine.pool_size=3", "infer.num_cpus=2", "infer.pool_size=2",
        "infer.batch_size=8", "read_num_cpus=0.25", "write_num_cpus=0.25", "products_num_cpus=0.5",
        "infer.device=cpu", "infer.torch_threads=3", "ray.num_cpus=8",
    )  # fmt: skip
    assert run_id_for(resources, scenes, "m") == run_id_for(base, scenes, "m")
    for decisive in ("infer.threshold=0.4", "refine.open_px=2", "tiling.tile_px=256", "outputs.probability=true"):
        assert run_id_for(map_config(f"input=[{scene}]", decisive), scenes, "m") != run_id_for(base, scenes, "m")
    loaded = load_config(MapConfig, REPO / "configs" / "map" / "waterland.yaml", ["infer.batch_invariant=false"])
    other = load_config(MapConfig, REPO / "configs" / "map" / "waterland.yaml", ["infer.batch_invariant=false",
                                                                                "infer.batch_size=7"])  # fmt: skip
    assert run_id_for(loaded, scenes, "m") != run_id_for(other, scenes, "m")  # batches change the bits then


def test_an_unreadable_lease_is_reported_not_taken(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LEASE).write_text("{not json")
    with pytest.raises(LeaseHeld, match="unreadable"):
        RunLease(str(run)).acquire()
    assert (run / LEASE).read_text() == "{not json"


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at `path` (read-only or nearly full outputs); skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_output_is_one_line_exit_2_before_ray(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "a.tif", 40, 40)
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        env = dict(os.environ, RAY_ADDRESS="", PYTHONPATH=str(REPO))
        cmd = [sys.executable, "-m", "rrsis.cli", "map", f"input=[{scene}]", f"infer.checkpoint={ckpt}",
               f"output={ro}/runs"]  # fmt: skip
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "Read-only file system" in lines[0] and f"{ro}/runs" in lines[0]
    assert "Ray" not in lines[0]


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_ends_it_with_one_line_exit_1(tmp_path: Path, ray_session: None) -> None:
    scenes = _many_scenes(tmp_path / "scenes", 4, 150)
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    with _tmpfs(tmp_path / "full", "size=96k") as full:
        args = [f"input=[{','.join(scenes)}]", f"infer.checkpoint={ckpt}", f"output={full}", *TILING]
        done = subprocess.run([sys.executable, "-m", "rrsis.cli", "map", *args], cwd=REPO, env=_ray_env(),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rrsis: write: [Errno 28] No space left on device"), last
    assert "committed scenes in" in last and "rerun the same command" in last


def test_cuda_asked_without_cuda_is_one_line_exit_2_before_ray(tmp_path: Path) -> None:
    env = dict(os.environ, RAY_ADDRESS="", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "rrsis.cli", "map", "infer.device=cuda", f"output={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "key 'infer.device'" in lines[0] and "no CUDA device" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
