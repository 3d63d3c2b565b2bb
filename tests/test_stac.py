"""STAC inputs: real Sen1Floods11 S1 chips written as per-polarisation COGs in linear power, described by
pystac Items (relative local hrefs, s3:// hrefs on the moto server), read by the map's read stage and mapped
end to end; bad items are one line each and the other scenes go on."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from pystac.extensions.raster import RasterBand, RasterExtension
from pystac.extensions.sar import FrequencyBand, Polarization, SarExtension

from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.manifest import read_table
from rrsis.pipeline.plan import plan_run
from rrsis.pipeline.run import run_map
from rrsis.pipeline.stac import asset_names, band_source, is_stac_input
from rrsis.pipeline.stages import read_stage
from tests.pipeline_data import map_config, read_tiles, tiny_checkpoint
from tests.test_vrt import linear_power, read_chip, write_cog

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "sen1floods11" / "S1Hand"
CHIPS = ("India_900498", "Pakistan_849790")
WHEN = datetime(2019, 6, 1, tzinfo=UTC)


def chip_path(chip: str) -> Path:
    return SAMPLES / f"{chip}_S1Hand.tif"


def s1_item(
    item_id: str,
    chip: str,
    hrefs: dict[str, str],
    *,
    unit: str | None = "linear",
    product_type: str = "RTC",
) -> pystac.Item:
    """An S1 RTC item as the large catalogs publish it: one COG asset per polarisation, sar:polarizations."""
    with rasterio.open(chip_path(chip)) as src:
        left, bottom, right, top = src.bounds
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    item = pystac.Item(item_id, {"type": "Polygon", "coordinates": [ring]}, [left, bottom, right, top], WHEN, {})
    pols = [Polarization(k.upper()) for k in hrefs]
    SarExtension.ext(item, add_if_missing=True).apply(
        instrument_mode="IW", frequency_band=FrequencyBand.C, polarizations=pols, product_type=product_type
    )
    for key, href in hrefs.items():
        asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"])
        item.add_asset(key, asset)
        asset.extra_fields["sar:polarizations"] = [key.upper()]
        if unit is not None:
            raster = RasterExtension.ext(asset, add_if_missing=True)
            raster.apply([RasterBand.create(nodata=float("nan"), data_type="float32", unit=unit)])  # type: ignore[arg-type]
    return item


def save_collection(path: Path, items: list[pystac.Item]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    return str(path)


@pytest.fixture(scope="module")
def stac_inputs(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> dict[str, Any]:
    """Per-band linear COGs of two real chips: India local (relative hrefs), Pakistan on S3 (s3:// hrefs)."""
    root = tmp_path_factory.mktemp("stac")
    client = boto3.client("s3")
    bucket = "rrsis-stac-inputs"
    client.create_bucket(Bucket=bucket)
    cogs: dict[str, dict[str, str]] = {}
    for chip in CHIPS:
        db, profile = read_chip(chip_path(chip))
        folder = root / "cogs" / chip
        folder.mkdir(parents=True)
        cogs[chip] = {}
        for i, pol in enumerate(("vv", "vh")):
            cogs[chip][pol] = write_cog(folder / f"{pol}.tif", linear_power(db[i]), profile, nodata=float("nan"))
    for pol in ("vv", "vh"):
        client.upload_file(cogs["Pakistan_849790"][pol], bucket, f"cogs/Pakistan_849790/{pol.upper()}.tif")
    india = s1_item("S1_India_900498", "India_900498", {p: f"../cogs/India_900498/{p}.tif" for p in ("vv", "vh")})
    s3_hrefs = {p.upper(): f"s3://{bucket}/cogs/Pakistan_849790/{p.upper()}.tif" for p in ("vv", "vh")}
    pakistan = s1_item("S1_Pakistan_849790", "Pakistan_849790", s3_hrefs, unit=None)
    collection = save_collection(root / "stac" / "items.json", [india, pakistan])
    return {"root": root, "bucket": bucket, "collection": collection, "cogs": cogs, "items": [india, pakistan]}


def test_item_collection_scenes_read_like_the_stacked_db_chips(stac_inputs: dict[str, Any], tmp_path: Path) -> None:
    assert is_stac_input(stac_inputs["collection"]) and is_stac_input("https://x/items/a.json?sig=1")
    scenes, problems = resolve_inputs([stac_inputs["collection"]], bands=["VV", "VH"])
    assert problems == []
    assert [s.scene_id for s in scenes] == ["S1_India_900498", "S1_Pakistan_849790"]
    again, _ = resolve_inputs([stac_inputs["collection"]])  # default bands: the item's sar:polarizations
    assert [s.uri for s in again] == [s.uri for s in scenes]  # stable: the run id hashes these
    from_stac = read_tiles([stac_inputs["collection"]], tmp_path / "a", tile_px=128)
    from_chips = read_tiles([str(chip_path(c)) for c in CHIPS], tmp_path / "b", tile_px=128)
    assert from_stac["status"].tolist() == from_chips["status"].tolist() == ["ok"] * 32
    assert (from_stac["valid"] == from_chips["valid"]).all()
    assert np.abs(from_stac["image"] - from_chips["image"]).max() < 1e-4
    for key in [*(f"transform_{k}" for k in "abcdef"), "crs"]:
        assert (from_stac[key] == from_chips[key]).all(), key


def test_item_file_on_s3_and_a_catalog_resolve_relative_hrefs(stac_inputs: dict[str, Any], tmp_path: Path) -> None:
    bucket = stac_inputs["bucket"]
    item = s1_item("on_s3", "Pakistan_849790", {p: f"../cogs/Pakistan_849790/{p}.tif" for p in ("VV", "VH")})
    boto3.client("s3").put_object(Bucket=bucket, Key="items/on_s3.json", Body=json.dumps(item.to_dict()).encode())
    catalog = pystac.Catalog("demo", "two chips")
    for chip in CHIPS:
        hrefs = {p: stac_inputs["cogs"][chip][p] for p in ("vv", "vh")}
        catalog.add_item(s1_item(f"cat_{chip}", chip, hrefs))
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    assert not json.loads(next((tmp_path / "catalog").rglob("cat_India*.json")).read_text())["assets"]["vv"][
        "href"
    ].startswith("/")
    scenes, problems = resolve_inputs([f"s3://{bucket}/items/on_s3.json", str(tmp_path / "catalog" / "catalog.json")])
    assert problems == []
    assert sorted(s.scene_id for s in scenes) == ["cat_India_900498", "cat_Pakistan_849790", "on_s3"]
    on_s3 = next(s for s in scenes if s.scene_id == "on_s3")
    assert f"/vsis3/{bucket}/cogs/Pakistan_849790/VV.tif" in on_s3.uri


def test_bad_items_are_one_line_each_and_the_others_go_on(stac_inputs: dict[str, Any], tmp_path: Path) -> None:
    cogs = stac_inputs["cogs"]["India_900498"]
    db, profile = read_chip(chip_path("India_900498"))
    utm = dict(profile, crs="EPSG:32646", transform=Affine(10.0, 0, 500000.0, 0, -10.0, 3000000.0))
    utm_vh = write_cog(tmp_path / "vh_utm.tif", linear_power(db[1]), utm)
    bad_unit = s1_item("bad_unit", "India_900498", {"vv": cogs["vv"], "vh": cogs["vh"]}, unit="furlong")
    items = [
        s1_item("no_vh", "India_900498", {"vv": cogs["vv"]}),
        s1_item("missing_href", "India_900498", {"vv": cogs["vv"], "vh": str(tmp_path / "gone" / "vh.tif")}),
        s1_item("mixed_crs", "India_900498", {"vv": cogs["vv"], "vh": utm_vh}),
        bad_unit,
        s1_item("grd_dn", "India_900498", {"vv": cogs["vv"], "vh": cogs["vh"]}, unit=None, product_type="GRD"),
        s1_item("good", "India_900498", {"vv": cogs["vv"], "vh": cogs["vh"]}),
    ]
    collection = save_collection(tmp_path / "bad" / "items.json", items)
    malformed = tmp_path / "broken.json"
    malformed.write_text('{"type": "Feature", "id": "x", ')
    not_stac = tmp_path / "other.json"
    not_stac.write_text('{"type": "Topology"}')
    scenes, problems = resolve_inputs([collection, str(malformed), str(not_stac)], bands=["VV", "VH"])
    assert [s.scene_id for s in scenes] == ["good"]
    reasons = {p.item.rsplit("#", 1)[-1] if "#" in p.item else Path(p.item).name: p.reason for p in problems}
    assert all("\n" not in r for r in reasons.values())
    assert reasons["no_vh"] == "item no_vh: no asset for band(s) VH; it has: vv (VV)"
    assert (
        reasons["missing_href"].startswith("missing_href: band VH: cannot open ")
        and "gone/vh.tif" in reasons["missing_href"]
    )
    assert reasons["mixed_crs"] == "mixed_crs: bands in different CRS cannot be stacked (VV EPSG:4326, VH EPSG:32646)"
    assert reasons["bad_unit"].startswith(
        "item bad_unit asset 'vv' raster:bands unit: unknown unit 'furlong'; allowed:"
    )
    assert "uncalibrated digital numbers" in reasons["grd_dn"]
    assert reasons["broken.json"].startswith(f"STAC {malformed} is malformed JSON: ")
    assert "'Topology' is not Feature, FeatureCollection, Catalog or Collection" in reasons["other.json"]
    # a unit given by the caller where the item declares none
    plain = s1_item("plain", "India_900498", {"vv": cogs["vv"], "vh": cogs["vh"]}, unit=None, product_type="GRD")
    single = tmp_path / "plain.json"
    single.write_text(json.dumps(plain.to_dict(transform_hrefs=False)))
    scenes, problems = resolve_inputs([str(single)], bands=["VV", "VH"], units={"VV": "linear", "VH": "linear"})
    assert problems == [] and [s.scene_id for s in scenes] == ["plain"]
    _, problems = resolve_inputs([str(single)], units={"VV": "gamma", "VH": "linear"})
    assert problems[0].reason.startswith("units.VV: unknown unit 'gamma'")


def _mosaic(run: Path, scene_id: str) -> tuple[np.ndarray, Any, Any]:
    with rasterio.open(run / scene_id / "mosaic.tif") as src:
        return src.read(1), src.transform, src.crs


def test_map_item_collection_matches_the_stacked_db_chips(
    ray_session: None, stac_inputs: dict[str, Any], tmp_path: Path
) -> None:
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    common = [f"infer.checkpoint={ckpt}", "tiling.tile_px=128", "tiling.overlap_px=16", "infer.batch_size=8"]
    malformed = tmp_path / "broken.json"
    malformed.write_text("{not json")
    stac_out, chip_out = tmp_path / "stac_run", tmp_path / "chip_run"
    status = run_map(map_config(f"input=[{stac_inputs['collection']},{malformed}]", f"output={stac_out}", *common))
    assert status == 1  # the malformed file is a failure; both items are mapped
    assert (
        run_map(map_config(f"input=[{','.join(str(chip_path(c)) for c in CHIPS)}]", f"output={chip_out}", *common)) == 0
    )
    (stac_run,) = [p for p in stac_out.iterdir() if p.is_dir()]
    (chip_run,) = [p for p in chip_out.iterdir() if p.is_dir()]
    failures = read_table(str(stac_run / "failures.parquet")).to_pylist()
    assert [(f["scene_uri"], f["reason"].split(":")[0]) for f in failures] == [
        (str(malformed), f"STAC {malformed} is malformed JSON")
    ]
    # the same items again: the same run id (item ids, hrefs), committed scenes are skipped, not rewritten
    mosaics = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in stac_run.rglob("mosaic.tif")}
    assert len(mosaics) == 2
    assert run_map(map_config(f"input=[{stac_inputs['collection']},{malformed}]", f"output={stac_out}", *common)) == 1
    assert [p for p in stac_out.iterdir() if p.is_dir()] == [stac_run]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in stac_run.rglob("mosaic.tif")} == mosaics
    for chip in CHIPS:
        got, transform, crs = _mosaic(stac_run, f"S1_{chip}")
        want, want_transform, want_crs = _mosaic(chip_run, f"{chip}_S1Hand")
        assert got.shape == want.shape == (512, 512)
        assert transform == want_transform and crs == want_crs
        water, want_water = got == 1, want == 1
        union = (water | want_water).sum()
        assert union > 1000  # the tiny model finds water and land on these chips
        assert (water & want_water).sum() / union >= 0.999
        assert ((got == 255) == (want == 255)).all()


S2_CHIP = SAMPLES.parent / "S2Hand" / "Spain_7370579_S2Hand.tif"
S2_BANDS = {"B2": (1, "blue"), "B3": (2, "green"), "B4": (3, "red"), "B8": (7, "nir")}  # chip band index


def read_stage_tiles(inputs: list[str], prefix: Path, bands: list[str]) -> dict[str, np.ndarray]:
    """The map's planning and read stage for a model with `bands`, one batch of every 128 px tile."""
    scenes, problems = resolve_inputs(inputs, bands=bands)
    assert problems == []
    _, rows, _ = plan_run(
        scenes, str(prefix), tile_px=128, overlap_px=0, requested_bands=[], model_bands=bands, in_bands=len(bands)
    )
    return read_stage({k: np.asarray([r[k] for r in rows]) for k in rows[0]})


def test_sentinel2_per_band_cogs_read_as_reflectance(tmp_path: Path) -> None:
    """L2A-style assets (uint16, offset -1000 from baseline 04.00, raster:bands scale/offset), keyed either
    B02... or blue/green/red/nir, give the 4-band model the reflectances of the original chip."""
    x1e4, profile = read_chip(S2_CHIP)
    items = []
    for style in ("B0x", "common"):
        item = pystac.Item(f"S2_{style}", None, None, WHEN, {})
        for band, (index, common) in S2_BANDS.items():
            dn = (x1e4[index].astype(np.int32) + 1000).astype(np.uint16)
            href = write_cog(tmp_path / f"{style}_{band}.tif", dn, profile, nodata=0)
            name = f"B{int(band[1:]):02d}"
            asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"])
            asset.extra_fields["eo:bands"] = [{"name": name, "common_name": common}]
            asset.extra_fields["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "scale": 1e-4, "offset": -0.1}]
            item.add_asset(name if style == "B0x" else common, asset)
        items.append(item)
    collection = save_collection(tmp_path / "s2.json", items)
    stacked = dict(profile, count=4, dtype="float32", nodata=float("nan"), driver="GTiff")
    with rasterio.open(tmp_path / "reflectance.tif", "w", **stacked) as dst:
        dst.write((x1e4[[i for i, _ in S2_BANDS.values()]].astype(np.float64) / 1e4).astype(np.float32))
        dst.descriptions = tuple(S2_BANDS)
    bands = list(S2_BANDS)
    got = read_stage_tiles([collection], tmp_path / "a", bands)
    want = read_stage_tiles([str(tmp_path / "reflectance.tif")], tmp_path / "b", bands)
    assert got["status"].tolist() == ["ok"] * 32 and want["status"].tolist() == ["ok"] * 16
    for half in (slice(0, 16), slice(16, 32)):
        assert (got["valid"][half] == want["valid"]).all()
        assert np.abs(got["image"][half] - want["image"]).max() < 1e-6


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server with HTTP range requests (GDAL's /vsicurl/ reads COGs by range)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes | None:
        path = self.translate_path(self.path.split("?", 1)[0])
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        wanted = self.headers.get("Range")
        if wanted:
            first, last = wanted.split("=", 1)[1].split("-")
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            data = data[start : end + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return data

    def do_HEAD(self) -> None:
        self._body()

    def do_GET(self) -> None:
        body = self._body()
        if body is not None:
            self.wfile.write(body)


def test_item_collection_over_http_and_from_a_list_file(stac_inputs: dict[str, Any], tmp_path: Path) -> None:
    root = stac_inputs["root"]
    handler = functools.partial(RangeHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stac/items.json"
        listing = tmp_path / "inputs.txt"
        listing.write_text(f"# scenes\n{url}\n")
        scenes, problems = resolve_inputs([str(listing)], bands=["VV", "VH"])
        assert problems == [] and [s.scene_id for s in scenes] == ["S1_India_900498", "S1_Pakistan_849790"]
        assert "/vsicurl/http://127.0.0.1:" in scenes[0].uri  # the relative hrefs resolved against the URL
        got = read_tiles([str(listing)], tmp_path / "a", tile_px=256)
        want = read_tiles([str(chip_path(c)) for c in CHIPS], tmp_path / "b", tile_px=256)
        assert (got["valid"] == want["valid"]).all() and np.abs(got["image"] - want["image"]).max() < 1e-4
    finally:
        server.shutdown()
        server.server_close()


def test_stac_1_1_band_fields_and_names() -> None:
    """STAC 1.1 `bands` (with `eo:common_name`) and asset-level unit/scale/offset/nodata; B8 finds B08."""
    item = pystac.Item("s2", None, None, WHEN, {})
    asset = pystac.Asset("B08.tif", roles=["data"])
    asset.extra_fields.update(
        bands=[{"name": "B08", "eo:common_name": "nir", "scale": 0.0001}], offset=-0.1, nodata=0, unit="1"
    )
    item.add_asset("nir", asset)
    item.add_asset("thumbnail", pystac.Asset("B08.png", roles=["thumbnail"]))
    source = band_source(item, "B8", "nir", "s3://bucket/items/s2.json", {})
    assert source.uri == "s3://bucket/items/B08.tif"
    assert (source.convert, source.scale, source.offset, source.nodata) == ("native", 0.0001, -0.1, 0.0)
    assert asset_names("nir", asset) == ["nir", "B08"]
