"""`run_map` end to end on the session's real Ray: S3 multi-scene with bad scenes (R3), worker kill (R1),
driver kill + resume (R2). Every run maps tiny scenes with a tiny real water-land model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import rasterio
from rasterio.transform import from_origin

from rrsis import storage
from rrsis.pipeline.cores import process_tree
from rrsis.pipeline.manifest import read_table
from rrsis.pipeline.run import run_map
from tests.pipeline_data import UTM_ORIGIN, map_config, tiny_checkpoint, write_scene

REPO = Path(__file__).resolve().parents[1]
TILING = ["tiling.tile_px=32", "tiling.overlap_px=8", "infer.batch_size=4"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _outputs(run_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every product and tile (sidecars and run tables hold timings/attempts)."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        if (path.is_file() and path.suffix in (".tif", ".geojson", ".png")) or path.name == "stats.json":
            out[str(path.relative_to(run_dir))] = _sha(path.read_bytes())
    return out


def _run_dir(output: Path) -> Path:
    (run,) = [p for p in output.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def local_scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("scenes")
    return {
        "ckpt": tiny_checkpoint(root / "model.pt"),
        "a": write_scene(root / "a.tif", 90, 70, seed=1, nan_corner_px=6),
        "b": write_scene(root / "b.tif", 60, 75, seed=2),
    }


def _local_cfg(scenes: dict[str, str], output: Path, *extra: str) -> list[str]:
    return [
        f"input=[{scenes['a']},{scenes['b']}]",
        f"output={output}",
        f"infer.checkpoint={scenes['ckpt']}",
        *TILING,
        *extra,
    ]


@pytest.fixture(scope="module")
def clean_run(ray_session: None, local_scenes: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("clean")
    assert run_map(map_config(*_local_cfg(local_scenes, output))) == 0
    return _run_dir(output)


def _upload_bad_and_good(tmp: Path, bucket: str) -> dict[str, str]:
    good = write_scene(tmp / "good.tif", 70, 45, seed=3)
    small = write_scene(tmp / "small.tif", 20, 25, seed=4)  # smaller than one tile
    blank = write_scene(tmp / "blank.tif", 40, 40, all_nan=True)
    three = write_scene(tmp / "three.tif", 30, 30, bands=3)
    nocrs = write_scene(tmp / "nocrs.tif", 30, 30, crs=None)
    data = Path(write_scene(tmp / "trunc.tif", 200, 200)).read_bytes()
    files = {"good": good, "small": small, "blank": blank, "three": three, "nocrs": nocrs}
    uris = {name: f"s3://{bucket}/scenes/{name}.tif" for name in [*files, "trunc", "corrupt"]}
    for name, path in files.items():
        storage.put_file(path, uris[name])
    storage.put_bytes(uris["trunc"], data[: len(data) // 2])
    storage.put_bytes(uris["corrupt"], b"this is not a GeoTIFF" * 50)
    uris["missing"] = f"s3://{bucket}/scenes-elsewhere/missing.tif"
    return uris


@pytest.mark.slow
def test_s3_multi_scene_with_bad_scenes(
    ray_session: None, s3_bucket: str, tmp_path: Path, local_scenes: dict[str, str]
) -> None:
    uris = _upload_bad_and_good(tmp_path, s3_bucket)
    output = f"s3://{s3_bucket}/runs"
    cfg = map_config(
        f"input=[s3://{s3_bucket}/scenes/,{uris['missing']}]",
        f"output={output}",
        f"infer.checkpoint={local_scenes['ckpt']}",
        "run_id=s3run",
        "outputs.probability=true",
        *TILING,
    )
    assert run_map(cfg) == 1  # bad scenes make the run fail; the good ones are complete
    run = f"{output}/s3run"
    failures = read_table(f"{run}/failures.parquet").to_pylist()
    reasons = {f["scene_id"]: f["reason"] for f in failures if not f["tile_id"]}
    assert set(reasons) == {"blank", "three", "nocrs", "trunc", "corrupt", "missing"}
    assert "all nodata" in reasons["blank"]
    assert "model takes 2" in reasons["three"] or "needs 2" in reasons["three"]
    assert "no CRS" in reasons["nocrs"]
    assert "corrupt or truncated" in reasons["trunc"] or "cannot open" in reasons["trunc"]
    assert "cannot open" in reasons["corrupt"] and "missing.tif" in reasons["missing"]

    manifest = read_table(f"{run}/manifest.parquet").to_pylist()
    keys = [m["key"] for m in manifest]
    assert len(keys) == len(set(keys))  # every tile once
    # stride 32 - 8 = 24: good 70x45 -> ceil(70/24) x ceil(45/24) = 3 x 2 = 6 tiles; small 20x25 (smaller than
    # one 32 px tile) -> 1 x 2 cores sharing one padded window; blank 40x40 -> 2 x 2 = 4
    assert {s: sum(m["scene_id"] == s for m in manifest) for s in ("good", "small", "blank")} == {
        "good": 6,
        "small": 2,
        "blank": 4,
    }
    for m in manifest:
        assert m["status"] == "written" and _sha(storage.get_bytes(m["key"])) == m["checksum"]
    for name, (height, width) in {"good": (70, 45), "small": (20, 25)}.items():
        with (
            rasterio.Env(AWS_VIRTUAL_HOSTING="FALSE"),
            rasterio.open(f"/vsis3/{s3_bucket}/runs/s3run/{name}/mosaic.tif") as src,
        ):
            mosaic = src.read()
            assert mosaic.shape == (2, height, width) and src.crs.to_epsg() == 32630
            assert src.transform == from_origin(*UTM_ORIGIN, 10.0, 10.0)  # the scene's grid, not a tile window's
        stats = json.loads(storage.get_bytes(f"{run}/{name}/stats.json"))
        scene_rows = [m for m in manifest if m["scene_id"] == name]
        assert stats["water_px"] == int((mosaic[0] == 1).sum()) == sum(m["water_px"] for m in scene_rows)
        assert stats["nodata_fraction"] == 0.0
        vectors = json.loads(storage.get_bytes(f"{run}/{name}/water.geojson"))
        total_m2 = sum(f["properties"]["area_m2"] for f in vectors["features"])
        # 10 m UTM pixels near the central meridian: 100 / 0.9996^2 m2 each (LAEA area), within 0.5 %
        assert total_m2 == pytest.approx(stats["water_px"] * 100.08, rel=5e-3)
        assert storage.get_bytes(f"{run}/{name}/quicklook.png")[:4] == b"\x89PNG"
    assert not [k for k in storage.list_prefix(f"{run}/blank/") if not k.endswith((".tif", ".json"))]
    boto3.client("s3").head_object(Bucket=s3_bucket, Key="runs/s3run/summary.json")


def _worker_pid(marker: str) -> int | None:
    for pid in process_tree(os.getpid())[1:]:
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except OSError:
            continue
    return None


def _tiles_written(output: Path) -> int:
    return len(list(output.rglob("tiles/*.tif.json")))


@pytest.mark.slow
def test_r1_worker_killed_mid_run_is_byte_identical(
    clean_run: Path, local_scenes: dict[str, str], tmp_path: Path
) -> None:
    output = tmp_path / "r1"
    killed: list[int] = []

    def kill_infer_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pid = _worker_pid("InferStage")
            if pid and _tiles_written(output) >= 1:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_infer_worker, daemon=True)
    killer.start()
    assert run_map(map_config(*_local_cfg(local_scenes, output))) == 0
    killer.join(timeout=5)
    assert killed, "the infer actor was never seen mid-run"
    run = _run_dir(output)
    assert _outputs(run) == _outputs(clean_run)
    manifest = read_table(str(run / "manifest.parquet")).to_pylist()
    assert len(manifest) == len({m["key"] for m in manifest}) == len(list(run.rglob("tiles/*.tif")))


def _verified(run: Path) -> int:
    count = 0
    for sidecar in run.rglob("tiles/*.tif.json"):
        tile = sidecar.with_suffix("")
        if tile.exists() and json.loads(sidecar.read_text())["checksum"] == _sha(tile.read_bytes()):
            count += 1
    return count


@pytest.mark.slow
def test_r2_driver_killed_then_resume_recomputes_only_missing(
    clean_run: Path, local_scenes: dict[str, str], tmp_path: Path
) -> None:
    import ray

    output = tmp_path / "r2"
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "rrsis.cli", "map", *_local_cfg(local_scenes, output)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while _tiles_written(output) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the driver finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settled = -1
    while settled != _tiles_written(output):  # in-flight tasks of the dead driver may still land
        settled = _tiles_written(output)
        time.sleep(3)
    run = _run_dir(output)
    verified = _verified(run)
    total = len(list(clean_run.rglob("tiles/*.tif")))
    assert 0 < verified < total
    assert run_map(map_config(*_local_cfg(local_scenes, output), "resume=true")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tiles_skipped"] == verified
    assert summary["tiles_computed"] == total - verified
    assert _outputs(run) == _outputs(clean_run)
    manifest = read_table(str(run / "manifest.parquet")).to_pylist()
    assert len(manifest) == len({m["key"] for m in manifest}) == total
