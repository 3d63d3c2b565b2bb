"""The run's outputs as a self-contained STAC catalog, written with pystac through `rrsis.storage`.

Layout, all links and asset hrefs relative (the folder can be copied or served from object storage):
`<run>/catalog.json` -> `<run>/collection.json` (the run) -> `<run>/<scene_id>/item.json` (one Item per
mapped scene, beside its mosaic, vectors, quicklook and stats, plus its `polygons/<scene_id>.parquet`).
Only core STAC fields and `rrsis:`-prefixed properties are used, so validation needs nothing but the core
schemas pystac ships: it never fetches a schema.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pystac
from pystac.validation import JsonSchemaSTACValidator

from rrsis import storage
from rrsis.errors import InputError
from rrsis.report.run import RunFacts, SceneFacts, full_uri

CATALOG = "catalog.json"
COLLECTION = "collection.json"
ITEM = "item.json"
#: asset key (a product file of the summary) -> (media type, roles, title)
ASSETS: dict[str, tuple[str, list[str], str]] = {
    "mosaic": (pystac.MediaType.COG, ["data"], "mask mosaic (COG)"),
    "vectors": (pystac.MediaType.GEOJSON, ["data"], "polygons (GeoJSON, EPSG:4326)"),
    "quicklook": (pystac.MediaType.PNG, ["overview", "visual"], "quicklook"),
    "stats": (pystac.MediaType.JSON, ["metadata"], "scene statistics"),
}
PARQUET = "application/vnd.apache.parquet"


class StorageStacIO(pystac.StacIO):
    """pystac reads and writes through rrsis.storage: local paths, file:// and s3:// alike."""

    def read_text(self, source: pystac.utils.HREF, *args: Any, **kwargs: Any) -> str:
        return storage.get_bytes(os.fspath(source)).decode()

    def write_text(self, dest: pystac.utils.HREF, txt: str, *args: Any, **kwargs: Any) -> None:
        storage.put_bytes(os.fspath(dest), txt.encode())


def model_of(facts: RunFacts) -> str:
    return ", ".join(facts.models) if facts.models else "unknown"


def scene_item(facts: RunFacts, scene: SceneFacts, when: datetime, polygons_uri: str | None) -> pystac.Item:
    p = scene.product
    props: dict[str, Any] = {
        "created": when.isoformat().replace("+00:00", "Z"),
        "rrsis:run_id": facts.run_id,
        "rrsis:model": model_of(facts),
        "rrsis:target": facts.summary.get("target", ""),
        "rrsis:scene_uri": scene.scene_uri,
        f"rrsis:{facts.unit}": {k: int(v) for k, v in sorted(scene.tiles.items())},
    }
    if "water_km2" in p:  # mapped areas (a boxes run has none)
        props["rrsis:area_km2"] = float(p.get("water_km2", 0.0))
        props["rrsis:area_fraction"] = float(p.get("water_fraction", 0.0))
        props["rrsis:valid_km2"] = float(p.get("valid_km2", 0.0))
        props["rrsis:nodata_fraction"] = float(p.get("nodata_fraction", 0.0))
    if p.get("polygons") is not None:
        props["rrsis:polygons"] = int(p["polygons"])
    geometry = {"type": "Polygon", "coordinates": [[list(pt) for pt in scene.ring]]} if scene.ring else None
    item = pystac.Item(
        id=scene.scene_id,
        geometry=geometry,
        bbox=list(scene.bbox) if scene.bbox else None,
        datetime=when,
        properties=props,
    )
    checksums = p.get("checksums") or {}
    for key, (media, roles, title) in ASSETS.items():
        if key in scene.files:
            extra = {"rrsis:sha256": checksums[key]} if checksums.get(key) else {}
            href = full_uri(facts.run_uri, scene.files[key])
            item.add_asset(key, pystac.Asset(href, title, None, media, roles, extra))
    if polygons_uri:
        item.add_asset("polygons", pystac.Asset(polygons_uri, "polygons (GeoParquet)", None, PARQUET, ["data"]))
    return item


def spatial_boxes(overall: list[float], boxes: list[tuple[float, float, float, float]]) -> list[list[float]]:
    """The union first, then each distinct scene box (the schema wants unique boxes; one scene: the union)."""
    distinct = sorted({tuple(b) for b in boxes})
    return [overall, *[list(b) for b in distinct]] if len(distinct) > 1 else [overall]


def build_catalog(facts: RunFacts, polygons: dict[str, str]) -> pystac.Catalog:
    """The catalog -> collection -> items tree of a run, hrefs set to their places in the run folder."""
    run = facts.run_uri
    when = facts.finished or datetime.now(tz=UTC)
    mapped = [s for s in facts.scenes if s.mapped]
    items = [scene_item(facts, s, when, polygons.get(s.scene_id)) for s in mapped]
    boxes = [s.bbox for s in mapped if s.bbox]
    overall = (
        [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
        if boxes
        else [-180.0, -90.0, 180.0, 90.0]
    )
    target = facts.summary.get("target", "")
    collection = pystac.Collection(
        id=facts.run_id,
        description=f"rrsis map run {facts.run_id}: {target} masks, polygons and quicklooks of {len(mapped)} scenes",
        extent=pystac.Extent(
            pystac.SpatialExtent(spatial_boxes(overall, boxes)),
            pystac.TemporalExtent([[when, when]]),
        ),
        license="other",
        title=f"rrsis map {facts.run_id}",
        extra_fields={"rrsis:model": model_of(facts), "rrsis:target": target},
    )
    collection.add_items(items)
    catalog = pystac.Catalog(
        id=f"{facts.run_id}-catalog",
        description=f"Outputs of rrsis map run {facts.run_id}; open report.html for the run report.",
        title=f"rrsis {facts.run_id}",
    )
    catalog.add_child(collection)
    catalog.set_self_href(storage.join(run, CATALOG))
    collection.set_self_href(storage.join(run, COLLECTION))
    for item in items:
        item.set_self_href(storage.join(run, item.id, ITEM))
    catalog.make_all_asset_hrefs_relative()
    return catalog


def write_catalog(facts: RunFacts, polygons: dict[str, str]) -> str:
    """Write and validate the run's catalog; its URI."""
    catalog = build_catalog(facts, polygons)
    validator = JsonSchemaSTACValidator()
    for obj in [catalog, *catalog.get_children(), *catalog.get_items(recursive=True)]:
        obj.validate(validator=validator)
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=StorageStacIO())
    return storage.join(facts.run_uri, CATALOG)


def validate_catalog(catalog_uri: str) -> int:
    """Read a catalog back through rrsis.storage and validate every object against the core STAC schemas
    (offline copies inside pystac); the number of objects validated."""
    stac_io = StorageStacIO()
    try:
        catalog = pystac.Catalog.from_file(catalog_uri, stac_io=stac_io)
    except pystac.STACError as exc:
        raise InputError(f"{catalog_uri} is not a STAC catalog: {exc}") from exc
    validator = JsonSchemaSTACValidator()
    objects: list[pystac.STACObject] = [catalog]
    for _root, children, items in catalog.walk():
        objects += [*children, *items]
    for obj in objects:
        if obj.stac_extensions:
            raise InputError(f"{obj.id}: uses STAC extensions {obj.stac_extensions}; only core schemas are offline")
        obj.validate(validator=validator)
    return len(objects)
