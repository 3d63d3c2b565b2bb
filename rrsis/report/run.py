"""What a finished map run says about itself, read back from its own outputs.

Everything comes from the run folder (`summary.json`, `manifest.parquet`, `failures.parquet`, `_commits/`,
the scenes' mosaics and an optional `config.yaml`), local or s3://, so a report can be (re)built for any
run at any time. Pixels are never read: footprints come from each mosaic's header.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import rasterio.warp
import yaml

from rrsis import storage
from rrsis.errors import InputError, RrsisError
from rrsis.geo.raster import open_raster
from rrsis.storage import s3
from rrsis.storage.uri import local_path

#: Per-tile busy times the manifest records (seconds, each tile's share of its batch).
TILE_STAGES = ("read_s", "infer_s", "refine_s", "write_s")
#: Per-window busy times of a boxes run's manifest (seconds; repeated on each box row of the window).
BOX_STAGES = ("window_cfpg_s", "window_sam_s", "window_mbo_s", "window_write_s")
#: Per-scene product times the summary records (seconds).
PRODUCT_STAGES = ("mosaic_s", "vectors_s", "quicklook_s")
#: The per-scene files of the summary's products.
PRODUCT_FILES = ("mosaic", "vectors", "quicklook", "stats")
#: A boxes run's per-scene files, where the summary does not list them (`boxes_manifest.parquet` runs).
BOX_FILES = {"mosaic": "mosaic.tif", "vectors": "boxes.geojson", "quicklook": "quicklook.png"}
#: Manifests a map run may have: one row per tile, or (boxes) one per box; the first that exists is read.
MANIFESTS = ("manifest.parquet", "boxes_manifest.parquet")
#: Points per footprint edge: enough to follow a projected scene's curved edges in WGS84.
EDGE_POINTS = 8
#: Commit records whose times are read for the timeline; above this the timeline is left out (one
#: request per record on object storage).
TIMELINE_MAX_COMMITS = 2000
#: Tile files whose write times are listed for the per-tile timeline (1,000 per S3 listing request); a
#: larger run keeps the per-scene commit steps only.
TIMELINE_MAX_TILES = 200_000
#: Points of a cumulative curve on the page (a large run's tile times are sampled down to these).
CURVE_POINTS = 240
#: Manifest rows aggregated at a time by the report (`scan_manifest`).
SCAN_BATCH_ROWS = 8192
SCAN_BUFFER_BYTES = 1 << 20  # read buffer of the manifest scan (bounded, not whole row groups)

Bbox = tuple[float, float, float, float]  # west, south, east, north (degrees)


@dataclass
class SceneFacts:
    """One scene of the run: its products (mapped) or its failure (not mapped)."""

    scene_id: str
    scene_uri: str
    product: dict[str, Any]  # the summary's per-scene entry; {} when the scene failed
    ring: list[tuple[float, float]] | None = None  # footprint (lon, lat), closed
    bbox: Bbox | None = None
    tiles: dict[str, int] = field(default_factory=dict)  # written | skipped | failed -> count
    failure: str = ""  # why the scene has no products
    files: dict[str, str] = field(default_factory=dict)  # mosaic|vectors|quicklook|stats -> path in the run

    @property
    def mapped(self) -> bool:
        return bool(self.product)


@dataclass
class RunFacts:
    run_uri: str
    summary: dict[str, Any]
    scenes: list[SceneFacts]
    failures: list[dict[str, Any]]  # failures.parquet rows
    models: list[str]  # the manifest's model ids (name@checksum)
    stage_busy_s: dict[str, float]  # tile stages and product stages, summed over tiles/scenes
    config: dict[str, Any] | None  # config.yaml of the run, when it has one
    finished: datetime | None  # when summary.json was written
    timeline: list[tuple[float, int]]  # (seconds since the run started, tiles committed so far)
    unit: str = "tiles"  # what a manifest row is: tiles, or boxes (a boxes run)
    tile_timeline: list[tuple[float, int]] = field(default_factory=list)  # (s since start, tiles written so far)

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.run_uri.rstrip("/").rsplit("/", 1)[-1])


def read_json(uri: str) -> dict[str, Any]:
    try:
        out = json.loads(storage.get_bytes(uri))
    except ValueError as exc:
        raise InputError(f"{uri} is not JSON: {exc}") from exc
    if not isinstance(out, dict):
        raise InputError(f"{uri} is not a JSON object")
    return out


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table | None:
    """The table at `uri` (only the `columns` it has), or None when there is no such file."""
    if not storage.exists(uri):
        return None
    data = storage.get_bytes(uri)
    try:
        names = pq.read_schema(io.BytesIO(data)).names
        cols = [c for c in columns if c in names] if columns is not None else None
        return pq.read_table(io.BytesIO(data), columns=cols)
    except pa.ArrowException as exc:
        raise InputError(f"{uri} is not a parquet file: {exc}") from exc


def modified(uri: str) -> datetime | None:
    """When an object was last written (file mtime or S3 LastModified), None when unknown."""
    try:
        if storage.is_remote(uri):
            meta = s3.head(uri)
            return meta["LastModified"] if meta else None
        return datetime.fromtimestamp(os.path.getmtime(local_path(uri)), tz=UTC)
    except (OSError, RrsisError):
        return None


def footprint(uri: str) -> tuple[list[tuple[float, float]], Bbox] | None:
    """The raster's outline in WGS84 and its bounding box, from its header only: a closed ring,
    counter-clockwise (RFC 7946), edges densified unless the raster is already in lon/lat."""
    with open_raster(uri) as src:
        if src.crs is None:
            return None
        left, bottom, right, top = src.bounds
        n = 1 if src.crs.to_epsg() == 4326 else EDGE_POINTS
        steps = [i / n for i in range(n)]
        # left edge down, bottom edge right, right edge up, top edge left: counter-clockwise
        xs = [left] * n + [left + (right - left) * f for f in steps] + [right] * n
        ys = [top - (top - bottom) * f for f in steps] + [bottom] * n + [bottom + (top - bottom) * f for f in steps]
        xs += [right - (right - left) * f for f in steps]
        ys += [top] * n
        lons, lats = rasterio.warp.transform(src.crs, "EPSG:4326", xs, ys)
        bbox = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", left, bottom, right, top, densify_pts=21)
    ring = [(float(x), float(y)) for x, y in zip(lons, lats, strict=True)]
    return [*ring, ring[0]], (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))


@dataclass
class ManifestFacts:
    """What the report needs of a run's manifest, aggregated while its row groups stream past: memory holds
    one batch of rows, never the run's (a 6 M-tile run's manifest is hundreds of MB)."""

    unit: str = "tiles"  # what a row is: tiles, or boxes (a boxes run)
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))  # scene -> status -> n
    busy: dict[str, float] = field(default_factory=dict)  # tile (or box-window) stage -> seconds, written rows
    models: set[str] = field(default_factory=set)  # name@checksum

    def add(self, batch: pa.Table) -> None:
        names = batch.column_names
        if "status" in names:  # a Counter, not Acero's group_by: its thread pool and buffers cost more
            pairs = collections.Counter(zip(batch["scene_id"].to_pylist(), batch["status"].to_pylist(), strict=True))
            for (scene_id, status), n in pairs.items():
                self.counts[scene_id][status] = self.counts[scene_id].get(status, 0) + n
        written = batch.filter(pc.equal(batch["status"], "written")) if "status" in names else batch
        for col in TILE_STAGES:
            if col in names:
                self.busy[col[:-2]] = self.busy.get(col[:-2], 0.0) + float(pc.sum(written[col]).as_py() or 0.0)
        if "model" in names:
            self.models.update(str(m) for m in pc.unique(batch["model"]).to_pylist() if m)


def scan_manifest(run_uri: str) -> ManifestFacts | None:
    """The run's manifest (the first of MANIFESTS it has) aggregated batch by batch; None without one. A
    remote manifest is fetched to a temporary file first (range reads per row group would cost a request
    each)."""
    for name in MANIFESTS:
        uri = storage.join(run_uri, name)
        if not storage.exists(uri):
            continue
        with contextlib.ExitStack() as stack:
            if storage.is_remote(uri):
                path = os.path.join(stack.enter_context(tempfile.TemporaryDirectory(prefix="rrsis-report-")), name)
                storage.get_file(uri, path)
            else:
                path = local_path(uri)
            try:
                return _scan(pq.ParquetFile(path, pre_buffer=False, buffer_size=SCAN_BUFFER_BYTES))
            except pa.ArrowException as exc:
                raise InputError(f"{uri} is not a parquet file: {exc}") from exc
    return None


def _scan(manifest: pq.ParquetFile) -> ManifestFacts:
    names = manifest.schema_arrow.names
    facts = ManifestFacts(unit="boxes" if "box_id" in names else "tiles")
    columns = [c for c in ("scene_id", "status", "model", "key", *TILE_STAGES, *BOX_STAGES) if c in names]
    box_cols = [c for c in BOX_STAGES if c in columns] if "key" in columns else []
    windows: dict[str, dict[str, Any]] = {}  # boxes: a window's times are on each of its boxes, count once
    for batch in manifest.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=columns, use_threads=False):
        table = pa.Table.from_batches([batch])
        facts.add(table)
        if box_cols:
            written = table.filter(pc.equal(table["status"], "written")) if "status" in columns else table
            windows.update((r["key"], r) for r in written.select(["key", *box_cols]).to_pylist())
    for col in box_cols:
        facts.busy[col.removeprefix("window_")[:-2]] = sum(float(r[col] or 0.0) for r in windows.values())
    return facts


def busy_times(manifest: ManifestFacts | None, products: list[dict[str, Any]]) -> dict[str, float]:
    """Busy seconds per stage: tile (or box-window) stages summed over what was computed in this run, product
    stages over scenes. Summed over workers, so they can exceed the wall time."""
    out: dict[str, float] = dict(manifest.busy) if manifest is not None else {}
    for col in PRODUCT_STAGES:
        values = [float(p[col]) for p in products if isinstance(p.get(col), int | float)]
        if values:
            out[col[:-2]] = sum(values)
    return out


def commit_timeline(run_uri: str, started: datetime | None, tiles_of: dict[str, int]) -> list[tuple[float, int]]:
    """Tiles committed over time, one step per scene commit (per-tile finish times are not recorded).

    A scene committed before this run started (resumed) counts at t = 0.
    """
    if started is None:
        return []
    uris = [u for u in storage.list_prefix(storage.join(run_uri, "_commits") + "/") if u.endswith(".json")]
    if not uris or len(uris) > TIMELINE_MAX_COMMITS:
        return []
    points = []
    for uri in uris:
        when = modified(uri)
        scene_id = uri.rsplit("/", 1)[-1][: -len(".json")]
        if when is not None:
            points.append((max(0.0, (when - started).total_seconds()), tiles_of.get(scene_id, 0)))
    points.sort()
    out, total = [], 0
    for t, n in points:
        total += n
        out.append((t, total))
    return out


def listed_times(prefix: str) -> dict[str, datetime]:
    """Every object under `prefix` with its last write time: S3 listings carry it (no request per object),
    local files are stat'ed."""
    out: dict[str, datetime] = {}
    if storage.is_remote(prefix):
        bucket, key = s3.split(prefix)
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                out[f"s3://{bucket}/{obj['Key']}"] = obj["LastModified"]
        return out
    for uri in storage.list_prefix(prefix):
        when = modified(uri)
        if when is not None:
            out[uri] = when
    return out


def cumulative(offsets: list[float], points: int = CURVE_POINTS) -> list[tuple[float, int]]:
    """(t, count of offsets <= t), at most `points` samples, always ending at the last one."""
    offsets = sorted(offsets)
    if not offsets:
        return []
    every = max(1, len(offsets) // points)
    out = [(offsets[i], i + 1) for i in range(every - 1, len(offsets), every)]
    if out[-1][1] != len(offsets):
        out.append((offsets[-1], len(offsets)))
    return out


def tile_timeline(run_uri: str, scene_ids: list[str], started: datetime | None) -> list[tuple[float, int]]:
    """Tiles written over time, from the write times of the tile files (`<scene>/tiles/<tile_id>.tif`) of the
    run: every tile once, a tile written before this run (resumed) at t = 0. Empty for runs above
    TIMELINE_MAX_TILES tiles (stops listing there) or without a start time."""
    if started is None:
        return []
    offsets: list[float] = []
    for scene_id in scene_ids:
        times = listed_times(storage.join(run_uri, scene_id, "tiles") + "/")
        offsets += [max(0.0, (t - started).total_seconds()) for uri, t in times.items() if uri.endswith(".tif")]
        if len(offsets) > TIMELINE_MAX_TILES:
            return []
    return cumulative(offsets)


def box_products(run_uri: str, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per-scene entries of a boxes run whose summary does not list its scenes: each scene of the manifest
    (`counts`: scene -> status -> boxes) with the files found in its folder and its box count."""
    out = []
    for scene_id in sorted(counts):
        statuses = counts[scene_id]
        boxes = statuses.get("written", 0) + statuses.get("skipped", 0)
        product: dict[str, Any] = {"scene_id": scene_id, "boxes": boxes}
        for key, name in BOX_FILES.items():
            if storage.exists(storage.join(run_uri, scene_id, name)):
                product[key] = f"{scene_id}/{name}"  # relative to the run folder
        out.append(product)
    return out


def scene_id_of(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def run_files(product: dict[str, Any], output: str) -> dict[str, str]:
    """The product's files relative to the run folder, as the run wrote them under `output` (the summary's
    `output`); a file outside the run keeps its full URI. Relative paths make the report and the catalog
    survive a copied or moved run folder."""
    out = {}
    for key in PRODUCT_FILES:
        uri = str(product.get(key) or "")
        if uri:
            out[key] = uri[len(output) + 1 :] if output and uri.startswith(output.rstrip("/") + "/") else uri
    return out


def full_uri(run_uri: str, path: str) -> str:
    return path if "://" in path or os.path.isabs(path) else storage.join(run_uri, path)


def normalize_run_uri(run_uri: str) -> str:
    """Local runs as absolute paths (pystac resolves relative hrefs against them), remote ones as given."""
    run_uri = run_uri.rstrip("/")
    return run_uri if storage.is_remote(run_uri) else os.path.abspath(local_path(run_uri))


def load_run(run_uri: str) -> RunFacts:
    """Read a finished run; a folder without `summary.json` is an InputError naming what is missing."""
    run_uri = normalize_run_uri(run_uri)
    summary_uri = storage.join(run_uri, "summary.json")
    if not storage.exists(summary_uri):
        raise InputError(
            f"{run_uri} is not a finished rrsis map run: no summary.json in it (give the run folder, <output>/<run_id>)"
        )
    summary = read_json(summary_uri)
    products = [p for p in summary.get("products", []) if isinstance(p, dict) and p.get("scene_id")]
    manifest = scan_manifest(run_uri)
    unit = manifest.unit if manifest is not None else "tiles"
    counts = manifest.counts if manifest is not None else {}
    if unit == "boxes" and not products:
        products = box_products(run_uri, counts)
    fail_table = read_parquet(storage.join(run_uri, "failures.parquet"))
    failures = fail_table.to_pylist() if fail_table is not None else []
    scenes = []
    output = str(summary.get("output") or "")
    for p in products:
        files = run_files(p, output)
        scene = SceneFacts(
            str(p["scene_id"]), str(p.get("scene_uri", "")), p, tiles=counts.get(p["scene_id"], {}), files=files
        )
        mosaic = full_uri(run_uri, files["mosaic"]) if "mosaic" in files else ""
        for uri in (mosaic, p.get("scene_uri")):
            if uri:
                try:
                    found = footprint(str(uri))
                except InputError:
                    continue
                if found:
                    scene.ring, scene.bbox = found
                    break
        scenes.append(scene)
    mapped = {s.scene_id for s in scenes}
    for f in failures:
        if f.get("tile_id") or not (f.get("scene_id") or f.get("scene_uri")):
            continue  # tile failures are counted in their scene's row
        scene_id = f.get("scene_id") or scene_id_of(str(f["scene_uri"]))
        if scene_id not in mapped:
            mapped.add(scene_id)
            tiles = counts.get(scene_id, {})
            scenes.append(SceneFacts(scene_id, str(f.get("scene_uri", "")), {}, tiles=tiles, failure=_reason(f)))
    models = sorted(manifest.models) if manifest is not None else []
    config_uri = storage.join(run_uri, "config.yaml")
    config = yaml.safe_load(storage.get_bytes(config_uri)) if storage.exists(config_uri) else None
    finished = modified(summary_uri)
    started = None
    if finished is not None and isinstance(summary.get("wall_s"), int | float):
        started = datetime.fromtimestamp(finished.timestamp() - float(summary["wall_s"]), tz=UTC)
    tiles_of = {s.scene_id: sum(s.tiles.values()) for s in scenes}
    return RunFacts(
        run_uri=run_uri,
        summary=summary,
        scenes=scenes,
        failures=failures,
        models=models,
        stage_busy_s=busy_times(manifest, products),
        config=config if isinstance(config, dict) else None,
        finished=finished,
        timeline=commit_timeline(run_uri, started, tiles_of),
        unit=unit,
        tile_timeline=tile_timeline(run_uri, [s.scene_id for s in scenes], started),
    )


def _reason(f: dict[str, Any]) -> str:
    return f"{f.get('stage', '')}: {f.get('reason', '')}".strip(": ")


def failure_groups(failures: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(stage: reason, items) groups, largest first; the scene's URI is taken out of the reason so equal
    causes group, and tile failures name their tile."""
    groups: dict[str, list[str]] = defaultdict(list)
    for f in failures:
        uri = str(f.get("scene_uri") or "")
        reason = str(f.get("reason") or "")
        key = f"{f.get('stage') or '?'}: {reason.replace(uri, '<scene>') if uri else reason}"
        item = str(f.get("scene_id") or uri or "?")
        groups[key].append(f"{item}/{f['tile_id']}" if f.get("tile_id") else item)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
