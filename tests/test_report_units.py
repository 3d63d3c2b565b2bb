"""The report's pieces without a map run: WKB encoding, chart ticks, failure groups, a 1,000-scene page,
and `rrsis report` on a folder that is not a run."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import torch

from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.cli import main
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model
from rrsis.report import build_report
from rrsis.report.evaluation import metric_blocks
from rrsis.report.geoparquet import geometry_wkb, polygons_uri, scene_polygons, write_polygons
from rrsis.report.page import render
from rrsis.report.run import RunFacts, SceneFacts, cumulative, failure_groups
from rrsis.report.svg import nice_ticks
from rrsis.report.training import load_train
from tests.browser import external_urls


def decode_wkb(data: bytes) -> Any:
    """GeoJSON-style coordinates of a little-endian 2D WKB Polygon or MultiPolygon (an independent reader)."""

    def polygon(off: int) -> tuple[list[list[list[float]]], int]:
        (nrings,) = struct.unpack_from("<I", data, off)
        off += 4
        rings = []
        for _ in range(nrings):
            (npts,) = struct.unpack_from("<I", data, off)
            coords = struct.unpack_from(f"<{2 * npts}d", data, off + 4)
            rings.append([[coords[2 * i], coords[2 * i + 1]] for i in range(npts)])
            off += 4 + 16 * npts
        return rings, off

    order, kind = struct.unpack_from("<BI", data, 0)
    assert order == 1
    if kind == 3:
        rings, end = polygon(5)
        assert end == len(data)
        return rings
    assert kind == 6
    (nparts,) = struct.unpack_from("<I", data, 5)
    off, parts = 9, []
    for _ in range(nparts):
        assert struct.unpack_from("<BI", data, off) == (1, 3)
        rings, off = polygon(off + 5)
        parts.append(rings)
    assert off == len(data)
    return parts


SQUARE = [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]]
HOLED = [[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 1.0]]]


def test_wkb_round_trips_polygons_and_multipolygons() -> None:
    assert geometry_wkb({"type": "Polygon", "coordinates": SQUARE}).hex().startswith("010300000001000000050000")
    assert decode_wkb(geometry_wkb({"type": "Polygon", "coordinates": HOLED})) == HOLED
    multi = [SQUARE, HOLED]
    assert decode_wkb(geometry_wkb({"type": "MultiPolygon", "coordinates": multi})) == multi


def test_polygons_dataset_has_every_feature_once_and_drops_stale_scenes(tmp_path: Path) -> None:
    def feature(i: int, coords: Any, **props: Any) -> dict[str, Any]:
        return {"type": "Feature", "properties": {"id": i, "area_m2": 1.5, **props}, "geometry": coords}

    a = {"type": "FeatureCollection", "features": [feature(0, {"type": "Polygon", "coordinates": SQUARE}, extra=1)]}
    b = {
        "type": "FeatureCollection",
        "features": [
            feature(0, {"type": "MultiPolygon", "coordinates": [SQUARE, HOLED]}, query="the lake", score=0.9),
            feature(1, {"type": "Polygon", "coordinates": HOLED}),
        ],
    }
    empty: dict[str, Any] = {"type": "FeatureCollection", "features": []}
    for name, fc in (("a", a), ("b", b), ("e", empty)):
        (tmp_path / f"{name}.geojson").write_text(json.dumps(fc))
    (tmp_path / "polygons").mkdir()
    (tmp_path / "polygons" / "gone.parquet").write_bytes(b"a scene no longer in the run")
    write_polygons(str(tmp_path), {n: str(tmp_path / f"{n}.geojson") for n in ("a", "b", "e")})
    table = ds.dataset(str(tmp_path / "polygons"), format="parquet").to_table().sort_by("scene_id")
    assert table["scene_id"].to_pylist() == ["a", "b", "b"]
    assert table["query"].to_pylist() == [None, "the lake", None]
    assert json.loads(table["properties"][0].as_py()) == {"extra": 1}
    assert decode_wkb(table["geometry"][1].as_py()) == [SQUARE, HOLED]
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["encoding"] == "WKB"


def test_a_map_runs_report_keeps_the_partitions_its_products_wrote_and_converts_the_rest(tmp_path: Path) -> None:
    """scene_polygons (a scene's products task) writes the partition, or removes it when the run has no
    report; write_polygons(reuse=True) (the map's own report) converts only the missing scenes; a rebuild
    (reuse=False) converts every scene from its GeoJSON."""

    def collection(n: int) -> str:
        square = {"type": "Polygon", "coordinates": SQUARE}
        features = [{"type": "Feature", "properties": {"id": i}, "geometry": square} for i in range(n)]
        return json.dumps({"type": "FeatureCollection", "features": features})

    run = str(tmp_path)
    for name in ("a", "b"):
        (tmp_path / f"{name}.geojson").write_text(collection(1))
    scene_polygons(run, "a", str(tmp_path / "a.geojson"), write=True)
    written = Path(polygons_uri(run, "a")).read_bytes()
    (tmp_path / "a.geojson").write_text(collection(3))  # seen only by a conversion
    vectors = {n: str(tmp_path / f"{n}.geojson") for n in ("a", "b")}

    def rows() -> dict[str, int]:
        table = ds.dataset(str(tmp_path / "polygons"), format="parquet").to_table()
        return {n: table["scene_id"].to_pylist().count(n) for n in ("a", "b")}

    write_polygons(run, vectors, reuse=True)
    assert Path(polygons_uri(run, "a")).read_bytes() == written and rows() == {"a": 1, "b": 1}
    write_polygons(run, vectors)
    assert rows() == {"a": 3, "b": 1}
    scene_polygons(run, "b", vectors["b"], write=False)
    assert not Path(polygons_uri(run, "b")).exists()


def test_nice_ticks_cover_the_maximum_in_round_steps() -> None:
    assert nice_ticks(7.3) == [0, 2, 4, 6, 8]
    assert nice_ticks(0.042)[-1] >= 0.042
    assert nice_ticks(0) == [0.0, 1.0]


def test_failure_groups_merge_equal_causes_across_scenes() -> None:
    rows = [
        {
            "scene_id": "a",
            "scene_uri": "s3://b/a.tif",
            "tile_id": "",
            "stage": "plan",
            "reason": "s3://b/a.tif: no CRS",
        },
        {
            "scene_id": "b",
            "scene_uri": "s3://b/b.tif",
            "tile_id": "",
            "stage": "plan",
            "reason": "s3://b/b.tif: no CRS",
        },
        {"scene_id": "c", "scene_uri": "c.tif", "tile_id": "r1_c2", "stage": "tile", "reason": "read failed"},
    ]
    assert failure_groups(rows) == [("plan: <scene>: no CRS", ["a", "b"]), ("tile: read failed", ["c/r1_c2"])]


def synthetic_run(n: int) -> RunFacts:
    scenes = []
    for i in range(n):
        lon, lat = -170 + (i % 100) * 3.4, -60 + (i // 100) * 12.0
        ring = [(lon, lat + 0.1), (lon, lat), (lon + 0.1, lat), (lon + 0.1, lat + 0.1), (lon, lat + 0.1)]
        product = {
            "scene_id": f"S1_{i:05d}",
            "water_km2": i * 0.01,
            "water_fraction": (i % 100) / 100,
            "valid_km2": 100.0,
            "nodata_fraction": 0.0,
            "polygons": i,
            "width_px": 10980,
            "height_px": 10980,
        }
        files = {k: f"S1_{i:05d}/{k}" for k in ("mosaic", "vectors", "quicklook", "stats")}
        scenes.append(
            SceneFacts(
                f"S1_{i:05d}",
                f"s3://bucket/scenes/S1_{i:05d}.tif",
                product,
                ring,
                (lon, lat, lon + 0.1, lat + 0.1),
                {"written": 484},
                "",
                files,
            )
        )
    summary = {"run_id": "map-synthetic", "target": "water", "scenes": n, "timings_s": {"compute_s": 3600.0}}
    busy = {"read": 10.0, "infer": 500.0, "refine": 20.0, "write": 30.0}
    return RunFacts("s3://bucket/runs/map-synthetic", summary, scenes, [], ["waterland@abc"], busy, None, None, [])


def test_a_1000_scene_page_stays_light_and_lazy() -> None:
    html = render(synthetic_run(1000))
    assert len(html.encode()) < 3_000_000
    assert html.count('loading="lazy"') == 1000 and html.count("<tr id=") == 1000
    assert external_urls(html) == []


@pytest.mark.parametrize("target", ["missing", "empty"])
def test_rrsis_report_on_a_folder_that_is_not_a_run_is_one_line(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / target
    if target == "empty":
        folder.mkdir()
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a finished rrsis run" in err and str(folder) in err
    assert all(name in err for name in ("summary.json", "results.parquet", "metrics.jsonl", "metrics.json"))


def test_cumulative_counts_every_offset_once_in_few_points() -> None:
    assert cumulative([3.0, 1.0, 2.0]) == [(1.0, 1), (2.0, 2), (3.0, 3)]
    assert cumulative([]) == []
    offsets = [i * 0.5 for i in range(1001)]
    curve = cumulative(offsets, points=100)
    assert len(curve) <= 102 and curve[-1] == (500.0, 1001)
    assert all(b[0] >= a[0] and b[1] > a[1] for a, b in itertools.pairwise(curve))
    assert all(n == sum(1 for o in offsets if o <= t) for t, n in curve)  # each point is the true count


def test_train_report_of_a_ray_train_layout_picks_the_best_kept_epoch(tmp_path: Path) -> None:
    """Ray Train keeps `epoch_NNNNN/` folders, no best.pt: the best is the kept epoch ranking highest by the
    run's metric (ties: the earlier epoch; NaN ranks lowest), never an epoch whose checkpoint is gone."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    cfg.waterland.family, cfg.waterland.width = "senet", "half"
    model = build_model(cfg)
    scores = {1: 0.5, 2: 0.7, 3: float("nan"), 4: 0.7, 5: 0.9}
    records = [{"epoch": e, "loss": 1.0 / e, "val_iou_water": v, "elapsed_s": 2.0 * e} for e, v in scores.items()]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for epoch in (2, 3, 4):  # Ray kept these; epoch 5's checkpoint is gone
        ckpt = checkpoint_from_model(
            model, cfg, bands=["VV"], norm_mean=[0.0], norm_std=[1.0], metrics=records[epoch - 1]
        )
        save_checkpoint(ckpt, str(tmp_path / f"epoch_{epoch:05d}" / "model.pt"))
        (tmp_path / f"epoch_{epoch:05d}" / "state.pt").write_bytes(b"state")
    facts = load_train(str(tmp_path), "val_iou_water")
    assert facts.checkpoints == [f"epoch_{e:05d}/model.pt" for e in (2, 3, 4)]
    assert facts.best is not None and (facts.best.path, facts.best.epoch, facts.best.value) == (
        "epoch_00002/model.pt",
        2,
        0.7,
    )
    latest = load_train(str(tmp_path)).best  # no metric recorded: the latest kept
    assert latest is not None and latest.epoch == 4
    page = build_report(str(tmp_path), kind="train", rank_by="val_iou_water")
    html = Path(page).read_text()
    assert "epoch_00002/model.pt</a>: epoch 2, val_iou_water = 0.7000" in html
    assert html.count('<tr id="epoch-') == 5 and '<tr id="epoch-2" class="best">' in html
    assert json.loads((tmp_path / "report.json").read_text()) == {"kind": "train", "rank_by": "val_iou_water"}
    assert build_report(str(tmp_path)) == page and Path(page).read_text() == html  # a rebuild: same page


def test_eval_metrics_become_method_group_and_top_level_tables() -> None:
    waterland = {
        "checkpoint": "m.pt",
        "checkpoint_metrics": {"epoch": 3.0, "val_iou_water": 0.5},  # training record: not a result
        "model": {"pooled": {"iou_water": 0.4, "n_pixels": 100.0}, "mean_chip_iou_water": 0.41},
        "otsu_vv": {"pooled": {"iou_water": 0.7, "n_pixels": 100.0}, "mean_chip_iou_water": 0.72},
    }
    methods, groups, top = metric_blocks(waterland)
    assert methods == {
        "model": {"pooled.iou_water": 0.4, "pooled.n_pixels": 100.0, "mean_chip_iou_water": 0.41},
        "otsu_vv": {"pooled.iou_water": 0.7, "pooled.n_pixels": 100.0, "mean_chip_iou_water": 0.72},
    }
    assert groups == {} and top == {}
    referring = {"model": "danet", "n": 3, "miou": 0.25, "per_category": {"lake": {"miou": 0.5}, "road": {"miou": 0.0}}}
    methods, groups, top = metric_blocks(referring)
    assert methods == {} and groups == {"per_category": {"lake": {"miou": 0.5}, "road": {"miou": 0.0}}}
    assert top == {"n": 3.0, "miou": 0.25}
