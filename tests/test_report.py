"""The run report of real map runs (the shipped Sen1Floods11 demo chips and the demo model), opened in
headless Chromium; its STAC catalog validated and its GeoParquet polygons read back; `rrsis report` on a run
in a real S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs
import pytest

from rrsis import storage
from rrsis.cli import main
from rrsis.config.load import load_config, to_dict
from rrsis.config.map import MapConfig
from rrsis.pipeline.run import run_map
from rrsis.report import build_report, validate_catalog
from rrsis.report.run import load_run
from tests.browser import Rendered, ensure_chromium, external_urls, open_page
from tests.test_report_units import decode_wkb

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
CHIPS = REPO / "data/samples/sen1floods11/S1Hand"
DEMO = [CHIPS / "Spain_7370579_S1Hand.tif", CHIPS / "India_900498_S1Hand.tif"]


def demo_config(output: str, inputs: list[str]) -> MapConfig:
    cfg: MapConfig = load_config(
        MapConfig,
        str(REPO / "configs/map/waterland.yaml"),
        [
            f"input=[{','.join(inputs)}]",
            f"output={output}",
            f"infer.checkpoint={REPO / 'models/waterland_demo/model.pt'}",
        ],
    )
    return cfg


def only_run(output: Path) -> Path:
    (run,) = [p for p in output.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def chromium() -> str:
    path = ensure_chromium()
    if not path:
        pytest.skip("no chromium: `apt-get install -y chromium` failed or is not allowed here (needs root + apt)")
    return path


@pytest.fixture(scope="module")
def demo_run(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("demo")
    cfg = demo_config(str(output), [str(p) for p in DEMO])
    assert run_map(cfg) == 0
    run = only_run(output)
    assert build_report(str(run), config=to_dict(cfg)) == f"{run}/report.html"
    return run


def check_page(rendered: Rendered, run: Path, summary: dict) -> None:
    """Every mapped scene's id, area and loaded quicklook are on the page; no request left the machine."""
    html = (run / "report.html").read_text()
    assert external_urls(html) == []
    assert rendered.requests and all(u.startswith(f"file://{run}/") for u in rendered.requests), rendered.requests
    rows = {r["id"].removeprefix("scene-"): r for r in rendered.rows}
    for product in summary["products"]:
        row = rows[product["scene_id"]]
        assert product["scene_id"] in row["text"]
        assert f"{product['water_km2']:.3f}" in row["cells"]
        assert f"{100 * product['water_fraction']:.1f}" in row["cells"]
        (img,) = [i for i in rendered.images if i["src"] == row["img"]]
        assert img["src"] == f"{product['scene_id']}/quicklook.png"
        assert img["naturalWidth"] > 0 and img["loading"] == "lazy"
    assert rendered.svgs >= 4  # map + timing plots
    charts = {c["label"]: c for c in rendered.charts}
    assert charts["tiles finished over time"]["width"] > 0 and charts["busy time per stage (summed over workers)"]


def test_demo_report_in_chromium(demo_run: Path, chromium: str, tmp_path: Path) -> None:
    summary = json.loads((demo_run / "summary.json").read_text())
    shot = tmp_path / "report.png"
    rendered = open_page(chromium, demo_run / "report.html", shot)
    check_page(rendered, demo_run, summary)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert len(rendered.rows) == len(DEMO)
    assert "No failures." in rendered.body
    assert "waterland@" in rendered.body  # the model id from the manifest
    assert "<dt>task</dt><dd>waterland</dd>" in (demo_run / "report.html").read_text()  # from config.yaml
    facts = load_run(str(demo_run))  # every tile's write time on the timeline, once
    assert facts.tile_timeline[-1][1] == summary["tiles"] and facts.timeline[-1][1] == summary["tiles"]
    assert set(facts.stage_busy_s) >= {"read", "infer", "refine", "write", "mosaic", "vectors", "quicklook"}


def test_catalog_validates_and_geoparquet_reads_back(demo_run: Path) -> None:
    summary = json.loads((demo_run / "summary.json").read_text())
    scenes = [p["scene_id"] for p in summary["products"]]
    assert validate_catalog(str(demo_run / "catalog.json")) == 2 + len(scenes)
    for scene_id in scenes:
        item = json.loads((demo_run / scene_id / "item.json").read_text())
        assert item["geometry"]["type"] == "Polygon" and item["properties"]["rrsis:model"].startswith("waterland@")
        for asset in item["assets"].values():
            assert not os.path.isabs(asset["href"]) and (demo_run / scene_id / asset["href"]).resolve().is_file()
    table = ds.dataset(str(demo_run / "polygons"), format="parquet").to_table()
    assert table.num_rows == sum(p["polygons"] for p in summary["products"]) > 0
    keys = list(zip(table["scene_id"].to_pylist(), table["feature_id"].to_pylist(), strict=True))
    assert len(set(keys)) == len(keys)  # every polygon once
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    first = json.loads((demo_run / scenes[0] / "water.geojson").read_text())["features"][0]
    row = table.filter(ds.field("scene_id") == scenes[0]).slice(0, 1).to_pylist()[0]
    assert decode_wkb(row["geometry"]) == first["geometry"]["coordinates"]
    assert row["area_m2"] == first["properties"]["area_m2"]


def test_report_of_a_run_with_failures(ray_session: None, chromium: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken_S1Hand.tif"
    broken.write_bytes(b"not a GeoTIFF")
    missing = tmp_path / "missing_S1Hand.tif"
    output = tmp_path / "out"
    cfg = demo_config(str(output), [str(DEMO[0]), str(broken), str(missing)])
    assert run_map(cfg) == 1
    run = only_run(output)
    build_report(str(run), config=to_dict(cfg))
    rendered = open_page(chromium, run / "report.html", tmp_path / "shot.png")
    check_page(rendered, run, json.loads((run / "summary.json").read_text()))
    rows = {r["id"].removeprefix("scene-"): r for r in rendered.rows}
    assert "not mapped" in rows["broken_S1Hand"]["text"]
    failures = "\n".join(rendered.failures)
    assert "broken_S1Hand" in failures and "missing_S1Hand" in failures
    assert validate_catalog(str(run / "catalog.json")) == 3  # the mapped scene only


def test_rrsis_report_on_an_s3_run(
    ray_session: None, s3_bucket: str, s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = f"s3://{s3_bucket}/runs"
    assert run_map(demo_config(output, [str(DEMO[0])])) == 0
    run = next(u for u in storage.list_prefix(output + "/") if u.endswith("/summary.json")).rsplit("/", 1)[0]
    assert main(["report", run]) == 0
    assert f"{run}/report.html" in capsys.readouterr().out
    scene = DEMO[0].stem
    for name in ("report.html", "catalog.json", "collection.json", f"{scene}/item.json", f"polygons/{scene}.parquet"):
        assert storage.exists(f"{run}/{name}"), name
    html = storage.get_bytes(f"{run}/report.html").decode()
    assert external_urls(html) == [] and f'src="{scene}/quicklook.png"' in html
    assert validate_catalog(f"{run}/catalog.json") == 3
    fs = pyarrow.fs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", region="us-east-1")
    table = ds.dataset(f"{run.removeprefix('s3://')}/polygons", format="parquet", filesystem=fs).to_table()
    summary = json.loads(storage.get_bytes(f"{run}/summary.json"))
    assert table.num_rows == summary["products"][0]["polygons"]


def flip_box_layout(run: Path, copy: Path) -> Path:
    """A copy of a boxes run in the other manifest layout: `manifest.parquet` with box rows and the scenes in
    summary.json (the shared executor), or `boxes_manifest.parquet` and a summary without scenes (before)."""
    shutil.copytree(run, copy)
    if (copy / "manifest.parquet").exists():
        (copy / "manifest.parquet").rename(copy / "boxes_manifest.parquet")
        summary = json.loads((copy / "summary.json").read_text())
        summary.pop("products", None)
        (copy / "summary.json").write_text(json.dumps(summary))
    else:
        (copy / "boxes_manifest.parquet").rename(copy / "manifest.parquet")
    for name in ("report.html", "catalog.json", "collection.json", "polygons"):
        target = copy / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return copy


def test_report_of_a_boxes_run_reads_either_manifest(
    ray_session: None, chromium: str, samples: Path, tmp_path: Path
) -> None:
    boxes_csv = tmp_path / "boxes.csv"
    boxes_csv.write_text("id,x1,y1,x2,y2\ncloud,369,139,419,201\nacross,230,300,330,380\nsmall,500,450,540,480\n")
    overrides = [f"output={tmp_path / 'out'}", f"boxes.path={boxes_csv}", "infer.torch_threads=1", "infer.device=cpu"]
    cfg = load_config(MapConfig, REPO / "configs/map/sam_boxes.yaml", overrides)
    assert run_map(cfg) == 0
    run = only_run(tmp_path / "out")
    build_report(str(run), config=to_dict(cfg))
    for folder in (run, flip_box_layout(run, tmp_path / "flipped")):
        if folder != run:
            assert main(["report", str(folder)]) == 0
        rendered = open_page(chromium, folder / "report.html", tmp_path / f"{folder.name}.png")
        assert rendered.requests and all(u.startswith(f"file://{folder}/") for u in rendered.requests)
        (row,) = rendered.tables["scenes"]
        assert row["id"] == "scene-RGB.byte"
        assert row["cells"][1].startswith("RGB.byte") and row["cells"][3:7] == ["-"] * 4  # no areas for boxes
        assert row["cells"][7:10] == ["3", "0", "0"]  # boxes computed, resumed, failed
        (img,) = rendered.images
        assert img["src"] == "RGB.byte/quicklook.png" and img["naturalWidth"] > 0
        assert "3 boxes: 3 computed, 0 resumed, 0 failed" in rendered.body and "boxes computed" in rendered.body
        busy = next(c for c in rendered.charts if c["label"].startswith("busy time per stage"))
        assert busy["bars"] == 4  # cfpg, sam, mbo, write
        assert validate_catalog(str(folder / "catalog.json")) == 3
        table = ds.dataset(str(folder / "polygons"), format="parquet").to_table()
        features = json.loads((folder / "RGB.byte" / "boxes.geojson").read_text())["features"]
        assert table.num_rows == sum(f["geometry"] is not None for f in features) > 0
