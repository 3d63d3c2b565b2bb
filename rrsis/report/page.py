"""The run report as one static HTML page: header, footprint map, sortable scene table, failures, plots.

Self-contained by construction: styles, script and figures are inline, and the only links are relative
paths to the run's own files (quicklooks load lazily), so the page opens from a laptop folder or object
storage without a server or the internet, and stays around 1 kB per scene.
"""

from __future__ import annotations

from html import escape
from typing import Any

import yaml

from rrsis.report import svg
from rrsis.report.run import RunFacts, SceneFacts, failure_groups

#: Items listed per failure reason (the rest are counted).
ITEMS_PER_REASON = 20
THUMB_PX = 96

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.ok{color:#2a7d2a} .bad{color:#b22}
.top{display:grid;grid-template-columns:minmax(380px,1fr) auto;gap:24px;align-items:start}
@media (max-width:1000px){.top{display:block}}
dl.run{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 16px;margin:12px 0}
dl.run dt{color:#666} dl.run dd{margin:0;overflow-wrap:anywhere}
dd.inputs div{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
table{border-collapse:collapse}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
th{background:#f4f4f4;position:sticky;top:0}
th.sort{cursor:pointer;user-select:none} th.sort:after{content:" \\2195";color:#aaa}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.failed td{background:#fdf0f0}
td.scene{min-width:240px;max-width:320px;overflow-wrap:anywhere}
img.thumb{display:block;background:#eee}
.figs{display:flex;flex-wrap:wrap;gap:16px} .chart .title{font-size:13px}
.chart text,.map text{font-size:11px;fill:#333}
.axis{stroke:#555} .grid{stroke:#e4e4e4} .sea{fill:#f3f8fc;stroke:#9ab}
.fp{fill:#1f77b4;fill-opacity:.45;stroke:#1f77b4} .fp.failed{fill:#d62728;stroke:#d62728}
a .fp:hover{fill-opacity:.8} .wide{overflow-x:auto;max-width:100%}
.note{color:#666;font-size:12px} pre{background:#f7f7f7;padding:8px;overflow:auto}
"""
SCRIPT = """
document.querySelectorAll('table.sortable th.sort').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], num = th.dataset.type === 'num';
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[idx].dataset.v, y = b.cells[idx].dataset.v;
      if (num) { x = parseFloat(x); y = parseFloat(y); x = isNaN(x) ? -Infinity : x; y = isNaN(y) ? -Infinity : y; }
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def document(title: str, body: str, css: str = "") -> str:
    """One report page: the shared head (CSS, `css` added), `title` as the page's title and first heading,
    `body`, the shared script (table sorting)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}{" " + css if css else ""}</style></head>
<body>
<h1>{escape(title)}</h1>
{body}
<script>{SCRIPT}</script>
</body></html>
"""


def link(path: str, text: str) -> str:
    """A link to a file of the run (relative path); a URI outside the run is shown, not linked."""
    if "://" in path and not path.startswith("file://"):
        return f'<span title="{escape(path)}">{escape(text)}</span>'
    return f'<a href="{escape(path)}">{escape(text)}</a>'


def td(text: str, value: Any = None, num: bool = False) -> str:
    v = "" if value is None else f' data-v="{escape(str(value))}"'
    return f"<td{v}{' class=num' if num else ''}>{text}</td>"


def scene_row(s: SceneFacts) -> str:
    p = s.product
    thumb = ""
    if "quicklook" in s.files:
        w, h = int(p.get("width_px") or 1), int(p.get("height_px") or 1)
        tw, th = (THUMB_PX, max(1, round(THUMB_PX * h / w))) if w >= h else (max(1, round(THUMB_PX * w / h)), THUMB_PX)
        src = escape(s.files["quicklook"])
        thumb = (
            f'<a href="{src}"><img class="thumb" src="{src}" loading="lazy" width="{tw}" height="{th}" '
            f'alt="quicklook of {escape(s.scene_id)}"></a>'
        )
    name = f'<b>{escape(s.scene_id)}</b><br><span class="note">{escape(s.scene_uri)}</span>'
    if s.failure:
        reason = s.failure.replace(s.scene_uri, "<scene>") if s.scene_uri else s.failure
        name += f'<br><span class="bad">not mapped: {escape(reason)}</span>'
    if s.bbox:
        w_, s_, e_, n_ = s.bbox
        where = f"{(s_ + n_) / 2:.4f}, {(w_ + e_) / 2:.4f}"
        footprint = f'<span title="W {w_:.5f} S {s_:.5f} E {e_:.5f} N {n_:.5f}">{where}</span>'
    else:
        footprint = "-"
    cells = [
        td(thumb),
        f'<td class=scene data-v="{escape(s.scene_id)}">{name}</td>',
        td(footprint, s.bbox[1] if s.bbox else None),
    ]
    if s.mapped and "water_km2" in p:
        area, frac = float(p.get("water_km2", 0.0)), 100 * float(p.get("water_fraction", 0.0))
        valid, nodata = float(p.get("valid_km2", 0.0)), 100 * float(p.get("nodata_fraction", 0.0))
        cells += [
            td(f"{area:.3f}", area, True),
            td(f"{frac:.1f}", frac, True),
            td(f"{valid:.3f}", valid, True),
            td(f"{nodata:.1f}", nodata, True),
        ]
    else:
        cells += [td("-", "", True) for _ in range(4)]
    for status in ("written", "skipped", "failed"):
        n = s.tiles.get(status, 0)
        cells.append(td(str(n), n, True))
    polys = p.get("polygons")
    cells.append(td("-" if polys is None else str(polys), polys, True))
    files = [link(s.files[k], k) for k in ("mosaic", "vectors", "stats") if k in s.files]
    if s.mapped:
        files.append(link(f"{s.scene_id}/item.json", "STAC item"))
        files.append(link(f"polygons/{s.scene_id}.parquet", "parquet"))
    cells.append(td(" · ".join(files)))
    cls = ' class="failed"' if not s.mapped else ""
    return f'<tr id="scene-{escape(s.scene_id)}"{cls}>{"".join(cells)}</tr>'


def scene_table(facts: RunFacts) -> str:
    target = escape(str(facts.summary.get("target") or "mapped"))
    unit = escape(facts.unit)
    heads = [
        ("quicklook", ""),
        ("scene", "str"),
        ("centre lat, lon", "num"),
        (f"{target} km²", "num"),
        (f"{target} % of valid", "num"),
        ("valid km²", "num"),
        ("nodata %", "num"),
        (f"{unit} computed", "num"),
        (f"{unit} resumed", "num"),
        (f"{unit} failed", "num"),
        ("polygons", "num"),
        ("files", ""),
    ]
    th = "".join(f'<th class="sort" data-type="{kind}">{h}</th>' if kind else f"<th>{h}</th>" for h, kind in heads)
    rows = "\n".join(scene_row(s) for s in facts.scenes)
    return f'<table class="sortable scenes"><thead><tr>{th}</tr></thead><tbody>\n{rows}\n</tbody></table>'


def failures_section(facts: RunFacts) -> str:
    groups = failure_groups(facts.failures)
    if not groups:
        return '<p class="ok">No failures.</p>'
    rows = []
    for reason, items in groups:
        shown = ", ".join(escape(i) for i in items[:ITEMS_PER_REASON])
        more = f" and {len(items) - ITEMS_PER_REASON} more" if len(items) > ITEMS_PER_REASON else ""
        rows.append(f'<tr><td class="num">{len(items)}</td><td>{escape(reason)}</td><td>{shown}{more}</td></tr>')
    return (
        '<table class="failures"><thead><tr><th>count</th><th>stage: reason</th><th>items</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">Every failure is a row of {link("failures.parquet", "failures.parquet")}.</p>'
    )


def plots_section(facts: RunFacts) -> str:
    s = facts.summary
    figs = [
        svg.bar_chart(facts.stage_busy_s, "busy time per stage (summed over workers)", "busy time, s"),
        svg.bar_chart(
            {
                k.removesuffix("_s"): float(v)
                for k, v in (s.get("timings_s") or {}).items()
                if isinstance(v, int | float)
            },
            "driver phases (wall clock)",
            "time, s",
        ),
        svg.line_chart(
            {
                name: [(0.0, 0.0), *((t, float(n)) for t, n in points)]
                for name, points in (
                    ("tiles written", facts.tile_timeline),
                    (f"{facts.unit} of committed scenes", facts.timeline),
                )
                if points
            },
            f"{facts.unit} finished over time",
            "seconds since the run started",
            facts.unit,
            dots=False,
            steps=True,
        ),
        svg.histogram(
            [100 * float(sc.product["water_fraction"]) for sc in facts.scenes if "water_fraction" in sc.product],
            10,
            100.0,
            f"scenes by {s.get('target') or 'mapped'} share",
            f"{s.get('target') or 'mapped'} % of the valid area",
            "scenes",
        ),
    ]
    note = (
        "Tiles finished over time: each tile file's write time (tiles written before this run count at 0 s), "
        "and the tiles of each scene when its commit record was written (its products done). Stage busy "
        "times are the manifest's per-tile read/infer/refine/write shares of their batches (tiles computed "
        "in this run) and the summary's per-scene product times (mosaic, vectors, quicklook), summed over "
        "workers, so they can exceed the wall time."
    )
    return f'<div class="figs">{"".join(f for f in figs if f)}</div><p class="note">{note}</p>'


def phases(summary: dict[str, Any]) -> dict[str, float]:
    timings = summary.get("timings_s") or {}
    return {k.removesuffix("_s"): float(v) for k, v in timings.items() if isinstance(v, int | float)}


def checkpoint_of(cfg: dict[str, Any]) -> str:
    """The model file the run mapped with: SAM's for a boxes run, else the inference checkpoint."""
    if cfg.get("task") == "boxes":
        sam = (cfg.get("boxes") or {}).get("sam") or {}
        return f"SAM {sam.get('model_type', '')}: {sam.get('checkpoint') or 'random initialisation'}"
    return str((cfg.get("infer") or {}).get("checkpoint") or "")


def failed_text(facts: RunFacts) -> str:
    s = facts.summary
    if "scenes_failed" in s or "tiles_failed" in s:
        return f"{s.get('scenes_failed', 0)} scenes and {s.get('tiles_failed', 0)} tiles failed"
    return f"{len(facts.failures)} failures"


def tiles_line(facts: RunFacts) -> str:
    """The run's tile counts from the summary; a boxes run's box counts from its manifest."""
    s = facts.summary
    if facts.unit == "boxes":
        n = {k: sum(sc.tiles.get(k, 0) for sc in facts.scenes) for k in ("written", "skipped", "failed")}
        return f"{sum(n.values())} boxes: {n['written']} computed, {n['skipped']} resumed, {n['failed']} failed"
    return (
        f"{s.get('tiles', 0)}: {s.get('tiles_computed', 0)} computed, {s.get('tiles_skipped', 0)} resumed "
        f"({s.get('tiles_verified', 0)} verified), {s.get('tiles_failed', 0)} failed"
    )


def run_block(items: str, config: dict[str, Any] | None) -> str:
    """A run's facts (the `<dt>/<dd>` items) and, folded below them, its config with a link to config.yaml:
    the header of every kind of report."""
    folded = ""
    if config:
        text = yaml.safe_dump(config, sort_keys=False)
        folded = (
            f"<details><summary>config ({link('config.yaml', 'config.yaml')})</summary>"
            f"<pre>{escape(text)}</pre></details>"
        )
    return f"<dl class=run>{items}</dl>{folded}"


def header(facts: RunFacts) -> str:
    s, cfg = facts.summary, facts.config or {}
    failed = int(s.get("scenes_failed") or 0) + int(s.get("tiles_failed") or 0)
    status = (
        '<span class="ok">ok</span>'
        if not failed and not facts.failures
        else f'<span class="bad">{failed_text(facts)}</span>'
    )
    inputs = [str(i) for i in cfg.get("input") or []]
    shown_inputs = "".join(f'<div title="{escape(i)}">{escape(i)}</div>' for i in inputs[:10]) + (
        f" and {len(inputs) - 10} more" if len(inputs) > 10 else ""
    )
    rows = [
        ("status", status),
        ("task", escape(str(cfg.get("task") or "not recorded (no config.yaml in the run)"))),
        ("query", escape(str(cfg.get("query") or ""))),
        ("target class", escape(str(s.get("target") or ""))),
        ("model", escape(", ".join(facts.models) or "not recorded")),
        ("checkpoint", escape(checkpoint_of(cfg))),
        ("inputs", shown_inputs),
        ("finished", escape(facts.finished.strftime("%Y-%m-%d %H:%M:%S UTC")) if facts.finished else "unknown"),
        ("wall time", f"{float(s.get('wall_s') or 0):.1f} s"),
        (
            "throughput",
            f"{float(s['tiles_per_s']):.2f} tiles/s (tiles computed / compute time)" if "tiles_per_s" in s else "",
        ),
        (
            "scenes",
            f"{s.get('scenes_ok', 0)} of {s.get('scenes', 0)} mapped, {s.get('scenes_resumed', 0)} committed before",
        ),
        (escape(facts.unit), tiles_line(facts)),
        (
            f"{escape(str(s.get('target') or 'mapped'))} area",
            f"{float(s.get('water_km2') or 0):.3f} km²" if "water_km2" in s else "",
        ),
        ("outputs", escape(facts.run_uri)),
        (
            "files",
            " · ".join(
                link(f, f)
                for f in ("summary.json", "manifest.parquet", "failures.parquet", "catalog.json", "polygons/")
            ),
        ),
    ]
    dl = "".join(f"<dt>{k}</dt><dd{' class=inputs' if k == 'inputs' else ''}>{v}</dd>" for k, v in rows if v)
    return run_block(dl, facts.config)


def render(facts: RunFacts) -> str:
    fp = svg.footprint_map(facts.scenes)
    map_section = (
        f"{fp}<p class=note style='max-width:600px'>Footprints: scene outlines in WGS84"
        " (lon/lat, x scaled by cos of the mean latitude), from each "
        "mosaic's bounds; dots mark scenes too small to see at this scale; red = not mapped. Click a scene to "
        "jump to its row.</p>"
        if fp
        else "<p class=note>No scene has a georeferenced mosaic to draw.</p>"
    )
    body = f"""<div class=top><div>{header(facts)}</div><div>{map_section}</div></div>
<h2>Scenes ({len(facts.scenes)})</h2>
<p class=note>Click a column header to sort. Areas are equal-area km² of the valid (not nodata) pixels.</p>
{scene_table(facts)}
<h2>Failures</h2>
{failures_section(facts)}
<h2>Timing</h2>
{plots_section(facts)}"""
    return document(f"rrsis map {facts.run_id}", body)
