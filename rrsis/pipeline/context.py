"""What every map task shares at the end of a run: the run's context, failures.parquet, summary.json and
the console summary (per-scene lines, failures grouped by reason, one closing line)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray
import ray.exceptions

from rrsis import storage
from rrsis.config.load import to_dict
from rrsis.config.map import MapConfig
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.lease import RunLease
from rrsis.pipeline.manifest import write_failures
from rrsis.pipeline.plan import Failure, one_line
from rrsis.report import build_report
from rrsis.resources import ray_options

log = logging.getLogger("rrsis.map")

#: Scenes listed one per line in the console summary (the rest are counted); items shown per failure reason.
SCENE_LINES = 20
ITEMS_PER_REASON = 3


@dataclass
class RunContext:
    """One run of `rrsis map` as the driver set it up for a task."""

    cfg: MapConfig
    scenes: list[SceneRef]  # usable inputs, in input order
    failures: list[Failure]  # so far: inputs that resolved to no scene
    run_id: str
    run_prefix: str
    lease: RunLease
    start: float
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # more for summary.json (e.g. the inference cores)


T = TypeVar("T")


def off_driver(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a Ray task when this driver is connected to Ray, else here. For the run's assembly
    (the one-file manifest from every scene's part, the report from the manifest): work that reads the whole
    run must not set the driver's peak memory, which stays flat in the run's tile count. The task's own
    error is raised as if it ran here."""
    if not ray.is_initialized():
        return fn(*args, **kwargs)
    options = ray_options("map.products", ray.cluster_resources())
    try:
        return ray.get(ray.remote(max_retries=1, **options)(fn).remote(*args, **kwargs))
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None


#: Failures of one manifest row (a tile, a box): counted in their scene's "N of M tiles failed" line.
ROW_STAGES = ("tile", "box")


def km2_text(km2: float) -> str:
    """An area for the console: 3 decimals from 0.1 km² up, else 3 significant digits (0.00165 km², never a
    rounded-away 0.000 km² for a scene that has some)."""
    if km2 <= 0:
        return "0 km²"
    return f"{km2:.3f} km²" if km2 >= 0.1 else f"{km2:.3g} km²"


def percent_text(fraction: float) -> str:
    """A share for the console: 1 decimal from 0.1 % up, else 2 significant digits (0.0080 %)."""
    pct = 100 * fraction
    return f"{pct:.1f} %" if pct >= 0.1 or pct <= 0 else f"{pct:.2g} %"


def water_line(p: dict[str, Any], target: str) -> str:
    """A mapped scene's console line: its area of class 1 and share of the valid pixels, or, with none, that
    none was mapped and on how many valid pixels (a scene whose mosaic was written never reads 0.000 km²)."""
    if int(p.get("water_px", 1)) == 0 or float(p["water_km2"]) <= 0:
        valid = f" in {int(p['valid_px']):,} valid px" if "valid_px" in p else ""
        return f"no {target} mapped{valid}"
    return f"{target} {km2_text(float(p['water_km2']))} ({percent_text(float(p['water_fraction']))})"


def water_totals(products: list[dict[str, Any]]) -> dict[str, Any]:
    return {"water_km2": sum(float(p.get("water_km2", 0.0)) for p in products)}


@dataclass(frozen=True)
class SummaryFormat:
    """How a task's summary reads: what class 1 of its masks is (`target`), the unit its manifest rows count,
    a scene's console line (what it mapped) and the run's totals in summary.json (the tile tasks: area)."""

    target: str
    unit: str = "tiles"
    scene_line: Callable[[dict[str, Any], str], str] = water_line
    totals: Callable[[list[dict[str, Any]]], dict[str, Any]] = water_totals


def failure_groups(failures: list[Failure]) -> list[tuple[str, list[Failure]]]:
    """Scene-level failures grouped by reason (the file name taken out, so equal causes group), largest first."""
    groups: dict[str, list[Failure]] = defaultdict(list)
    for f in failures:
        if f.tile_id and f.stage in ROW_STAGES:
            continue  # counted in its scene's "N of M tiles failed"
        reason = f.reason.replace(f.scene_uri, "<scene>") if f.scene_uri else f.reason
        groups[f"{f.stage}: {reason}"].append(f)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def finish_run(
    ctx: RunContext, records: list[dict[str, Any]], counts: dict[str, int], compute_s: float, fmt: SummaryFormat
) -> int:
    """Write failures.parquet and summary.json from the committed scenes' records, print the summary;
    0 when every scene was mapped, 1 otherwise."""
    failures = ctx.failures
    write_failures(storage.join(ctx.run_prefix, "failures.parquet"), [f.to_row() for f in failures])
    products = [r["products"] for r in records]
    failed_scenes = {f.scene_uri for f in failures if not f.tile_id}
    unit = fmt.unit
    summary = {
        "run_id": ctx.run_id,
        "output": ctx.run_prefix,
        "target": fmt.target,  # what class 1 of the masks is
        "scenes": len(ctx.scenes) + sum(1 for f in failures if f.stage == "input"),
        "scenes_ok": len(records),
        "scenes_failed": len(failed_scenes),
        **counts,
        **fmt.totals(products),
        f"{unit}_per_s": counts.get(f"{unit}_computed", 0) / compute_s if compute_s > 0 else 0.0,
        "wall_s": time.perf_counter() - ctx.start,
        "timings_s": ctx.timings,
        **ctx.notes,
        "products": products,
    }
    storage.put_bytes(storage.join(ctx.run_prefix, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
    report = write_report(ctx)
    for p in products[:SCENE_LINES]:
        where = ", ".join(f"{k} {p[k]}" for k in ("mosaic", "vectors", "quicklook", "stats") if k in p)
        print(f"  {p['scene_id']}: {fmt.scene_line(p, fmt.target)}; {where}")
    if len(products) > SCENE_LINES:
        print(f"  ... and {len(products) - SCENE_LINES} more scenes (summary.json lists them all)")
    for reason, group in failure_groups(failures):
        items = ", ".join(f.scene_id or f.scene_uri for f in group[:ITEMS_PER_REASON])
        more = f" and {len(group) - ITEMS_PER_REASON} more" if len(group) > ITEMS_PER_REASON else ""
        print(f"  FAILED {len(group)} x {reason} ({items}{more})")
    if report:
        print(f"  report: {report}")
    print(summary_line(summary, unit), flush=True)
    return 1 if failures else 0


def write_report(ctx: RunContext) -> str:
    """The run's report page, STAC catalog and GeoParquet polygons (`outputs.report`); a report that cannot
    be built is a warning, never a failed map (`rrsis report RUN` builds it again)."""
    if not ctx.cfg.outputs.report:
        return ""
    try:
        # the scenes' products tasks wrote their GeoParquet partitions (pipeline.build): reused
        return off_driver(build_report, ctx.run_prefix, to_dict(ctx.cfg), reuse_polygons=True)
    except Exception as exc:  # the maps are written; the page is only a view of them
        log.warning("run %s: report not written: %s", ctx.run_id, one_line(exc))
        return ""


def summary_line(s: dict[str, Any], unit: str = "tiles") -> str:
    """The run's closing line; `unit`: what the manifest's rows are (tiles, boxes)."""
    status = "ok" if not s["scenes_failed"] else f"{s['scenes_failed']} FAILED (reasons above, failures.parquet)"
    resumed = f", {s['scenes_resumed']} scenes committed before" if s.get("scenes_resumed") else ""
    area = f"{s.get('target', 'water')} {km2_text(float(s['water_km2']))}, " if "water_km2" in s else ""
    return (
        f"rrsis map {s['run_id']}: {status}; scenes {s['scenes_ok']}/{s['scenes']} mapped{resumed}, "
        f"{unit} {s[unit]} ({s[f'{unit}_computed']} computed, {s[f'{unit}_skipped']} resumed, "
        f"{s[f'{unit}_failed']} failed), {area}"
        f"{s[f'{unit}_per_s']:.1f} {unit}/s, "
        f"{s['wall_s']:.1f} s; outputs: {s['output']}"
    )
