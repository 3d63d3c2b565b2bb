"""Per-scene commits: what makes a run restartable at the scale of a continent.

When a scene's tiles and products are done the driver writes, in this order:
1. its part of the manifest, `<run>/manifest/<scene_id>.parquet` (one row per tile; the folder is one
   dataset for `pyarrow.dataset`, DuckDB or Spark);
2. last, a small commit record `<run>/_commits/<scene_id>.json`: the counts, the products' URIs and stats,
   and the SHA-256 of everything the scene wrote (the manifest part, the tiles as a digest of their
   checksums, each product file).

A rerun lists `_commits/` once and skips every committed scene without reading any of its tiles; only the
scenes that were in flight are verified tile by tile. The run-level `manifest.parquet` and `summary.json` are
rebuilt from the parts and records, streaming one scene at a time, so a driver killed in hour 20 loses at
most the scenes in flight and the driver's memory never holds a row per tile of the run.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyarrow.fs import S3FileSystem

from rrsis import storage
from rrsis.errors import StorageError
from rrsis.pipeline.manifest import MANIFEST_SCHEMA, conform_table, table_bytes
from rrsis.pipeline.plan import sha256_of
from rrsis.storage import s3
from rrsis.storage.uri import local_path

COMMITS = "_commits"
PARTS = "manifest"
PRODUCT_KEYS = ("mosaic", "vectors", "quicklook", "stats", "referring_vectors", "query_boxes")
PREFETCH = 16  # objects read ahead when a run is assembled from its parts and records
T = TypeVar("T")


@dataclass(frozen=True)
class PartFormat:
    """What a task's manifest rows are: their schema (with `scene_id`, `key`, `status` and `checksum`
    columns), how a scene's rows are conformed (deduplicated, ordered, typed), the unit a row counts
    (`tiles`, `boxes`) and how a failed row is named in failures.parquet."""

    schema: pa.Schema
    conform: Callable[[Iterable[Mapping[str, Any]]], pa.Table]
    unit: str
    id_column: str = "tile_id"  # names a failed row in failures.parquet
    row_stage: str = "tile"  # the stage of a failed row's failure


TILE_PARTS = PartFormat(MANIFEST_SCHEMA, conform_table, "tiles")


def conform_rows(
    rows: Iterable[Mapping[str, Any]],
    schema: pa.Schema,
    unique: Callable[[Mapping[str, Any]], tuple[Any, ...]],
    order: Callable[[Mapping[str, Any]], tuple[Any, ...]],
) -> pa.Table:
    """Rows as a `schema` table: one per `unique(row)` (the last attempt wins), sorted by `order(row)`."""
    by_id = {unique(r): r for r in rows}
    ordered = sorted(by_id.values(), key=order)
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in ordered], schema=schema)


def commit_key(run_prefix: str, scene_id: str) -> str:
    return storage.join(run_prefix, COMMITS, f"{scene_id}.json")


def part_key(run_prefix: str, scene_id: str) -> str:
    return storage.join(run_prefix, PARTS, f"{scene_id}.parquet")


def product_checksums(result: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 of every product file a scene's products task reported (runs where the files were written)."""
    return {k: sha256_of(str(result[k])) for k in PRODUCT_KEYS if result.get(k)}


def committed_scenes(run_prefix: str) -> dict[str, str]:
    """scene_id -> commit record URI, from one listing of `_commits/`."""
    prefix = storage.join(run_prefix, COMMITS) + "/"
    out = {}
    for uri in storage.list_prefix(prefix):
        name = uri.rsplit("/", 1)[-1]
        if name.endswith(".json"):
            out[name[: -len(".json")]] = uri
    return out


def read_record(uri: str) -> dict[str, Any]:
    return json.loads(storage.get_bytes(uri))  # type: ignore[no-any-return]


def commit_scene(
    run_prefix: str,
    scene: Mapping[str, Any],
    tiles: list[dict[str, Any]],
    products: Mapping[str, Any],
    fmt: PartFormat = TILE_PARTS,
    failures: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Write the scene's manifest part, then its commit record (the record last: it is the commit).

    `failures`: failure rows of a scene that is still a result (e.g. a box outside the scene); the record
    keeps them, so a rerun that skips the scene reports them again."""
    scene_id = str(scene["scene_id"])
    table = fmt.conform(tiles)
    data = table_bytes(table)
    part = part_key(run_prefix, scene_id)
    storage.put_bytes(part, data)
    status = table.column("status").to_pylist()
    record = {
        "scene_id": scene_id,
        "scene_uri": str(scene["uri"]),
        "tiles": len(status),
        "tiles_computed": status.count("written"),
        "tiles_skipped": status.count("skipped"),
        "manifest_part": part,
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "tiles_sha256": hashlib.sha256("".join(table.column("checksum").to_pylist()).encode()).hexdigest(),
        "products": dict(products),
        "checksums": dict(products.get("checksums", {})),
    }
    if failures:
        record["failures"] = [dict(f) for f in failures]
    storage.put_bytes(commit_key(run_prefix, scene_id), json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def write_run_manifest(
    run_prefix: str,
    scene_ids: Iterable[str],
    out_uri: str,
    before: Set[str] = frozenset(),
    fmt: PartFormat = TILE_PARTS,
) -> dict[str, int]:
    """Concatenate the scenes' manifest parts (in the given order) into one parquet file, one part at a time:
    memory holds one scene's rows, never the run's. Returns the row counts, named by `fmt.unit` (tiles:
    `tiles`, `tiles_computed` (written by this run), `tiles_skipped` (verified from an earlier attempt, or
    in a scene of `before`, the scenes committed before this run) and `tiles_failed`)."""
    unit, schema = fmt.unit, fmt.schema
    counts = {unit: 0, f"{unit}_computed": 0, f"{unit}_skipped": 0, f"{unit}_failed": 0}
    with tempfile.TemporaryDirectory(prefix="rrsis-manifest-") as tmp:
        path = os.path.join(tmp, "manifest.parquet")
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for scene_id, data in prefetched(lambda s: _part_bytes(run_prefix, s), scene_ids):
                if data is None:
                    continue
                table = pq.read_table(io.BytesIO(data))
                writer.write_table(table.select(schema.names).cast(schema))
                status = table.column("status").to_pylist()
                counts[unit] += len(status)
                if scene_id in before:
                    counts[f"{unit}_skipped"] += len(status)
                    continue
                counts[f"{unit}_computed"] += status.count("written")
                counts[f"{unit}_skipped"] += status.count("skipped")
                counts[f"{unit}_failed"] += status.count("failed")
        storage.put_file(path, out_uri)
    return counts


def _part_bytes(run_prefix: str, scene_id: str) -> bytes | None:
    try:
        return storage.get_bytes(part_key(run_prefix, scene_id))
    except StorageError:  # the scene has no part (it never got all its tiles)
        return None


def prefetched(fetch: Callable[[str], T], keys: Iterable[str], ahead: int = PREFETCH) -> Iterator[tuple[str, T]]:
    """(key, fetch(key)) in the order of `keys`, fetched by a few threads at most `ahead` keys in advance:
    object-store latency overlaps, memory holds `ahead` results, not all of them."""
    with ThreadPoolExecutor(max_workers=min(ahead, 8)) as pool:
        window: collections.deque[tuple[str, Future[T]]] = collections.deque()
        for key in keys:
            window.append((key, pool.submit(fetch, key)))
            if len(window) >= ahead:
                first, future = window.popleft()
                yield first, future.result()
        while window:
            first, future = window.popleft()
            yield first, future.result()


def manifest_dataset(run_prefix: str, schema: pa.Schema = MANIFEST_SCHEMA) -> pads.Dataset:
    """The run's manifest parts as one dataset (local or s3://); `schema`: the task's (`PartFormat.schema`)."""
    base = storage.join(run_prefix, PARTS)
    if storage.is_remote(base):
        bucket, key = s3.split(base)
        endpoint = s3.endpoint_url()
        scheme = "http" if endpoint.startswith("http:") else "https"
        fs = S3FileSystem(endpoint_override=endpoint or None, scheme=scheme)
        return pads.dataset(f"{bucket}/{key}", filesystem=fs, format="parquet", schema=schema)
    return pads.dataset(local_path(base), format="parquet", schema=schema)


def empty_manifest() -> pa.Table:
    return MANIFEST_SCHEMA.empty_table()
