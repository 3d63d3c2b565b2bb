"""manifest.parquet (one row per tile) and failures.parquet (one row per bad scene or tile).

The manifest is written per scene as it is committed (`rrsis.pipeline.commit`) and concatenated into the
run's `manifest.parquet` at the end; failures.parquet is written at the end. Both have a fixed column order
and types, so they read the same from pandas, DuckDB or Spark. A tile appears in the manifest exactly once
whatever happened during the run
(retried tasks, resumed runs): rows are de-duplicated by key, the last attempt winning.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rrsis import storage

MANIFEST_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("scene_uri", pa.string()),
        ("tile_id", pa.string()),
        ("row", pa.int32()),
        ("col", pa.int32()),
        ("core_col_off", pa.int64()),
        ("core_row_off", pa.int64()),
        ("core_width", pa.int32()),
        ("core_height", pa.int32()),
        ("key", pa.string()),
        ("status", pa.string()),  # written | skipped (verified from a previous run) | failed
        ("reason", pa.string()),
        ("checksum", pa.string()),  # SHA-256 of the tile's bytes
        ("bytes", pa.int64()),
        ("attempt", pa.int32()),  # how many times this run id has written the tile
        ("model", pa.string()),
        ("read_s", pa.float64()),
        ("infer_s", pa.float64()),
        ("refine_s", pa.float64()),
        ("write_s", pa.float64()),
        ("valid_px", pa.int64()),
        ("water_px", pa.int64()),
        ("valid_m2", pa.float64()),
        ("water_m2", pa.float64()),
    ]
)

FAILURES_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("scene_uri", pa.string()),
        ("tile_id", pa.string()),  # empty for a scene-level failure
        ("stage", pa.string()),  # input | plan | read | write | products | stats
        ("reason", pa.string()),
    ]
)

_DEFAULTS: dict[str, Any] = {"string": "", "int32": 0, "int64": 0, "double": 0.0}


def _conform(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for row in rows:
        for f in schema:
            value = row.get(f.name)
            columns[f.name].append(_DEFAULTS[str(f.type)] if value is None else _plain(value))
    return pa.Table.from_pydict(columns, schema=schema)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def dedupe_tiles(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per key (last wins), ordered by (scene_id, row, col) so manifests compare across runs."""
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_key[str(row["key"])] = dict(row)
    return sorted(by_key.values(), key=lambda r: (str(r["scene_id"]), int(r["row"]), int(r["col"])))


def conform_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Tile rows as the manifest stores them: deduplicated, ordered, with the manifest's schema."""
    return _conform(dedupe_tiles(rows), MANIFEST_SCHEMA)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_manifest(uri: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    table = _conform(dedupe_tiles(rows), MANIFEST_SCHEMA)
    storage.put_bytes(uri, table_bytes(table))
    return table


def write_failures(uri: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    table = _conform(rows, FAILURES_SCHEMA)
    storage.put_bytes(uri, table_bytes(table))
    return table


def read_table(uri: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.get_bytes(uri)))
