"""The report of a `rrsis eval` run, read back from its own folder.

The folder has `metrics.json` (water-land: one block per method, model and Otsu baselines, each with pooled
metrics; referring: one flat block), a per-item CSV (`chips.csv` or `samples.csv`) and `panels/*.png`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import yaml

from rrsis import storage
from rrsis.report import svg
from rrsis.report.page import document, link, td
from rrsis.report.run import modified, read_json

METRICS = "metrics.json"
ITEM_FILES = ("chips.csv", "samples.csv")
#: Rows of the per-item table on the page (the CSV has them all).
ITEM_ROWS = 200
PANEL_PX = 960


@dataclass
class EvalFacts:
    run_uri: str
    report: dict[str, Any]  # metrics.json
    items: list[dict[str, str]]  # rows of the per-item CSV
    items_file: str
    panels: list[str]  # relative paths of the panel images
    config: dict[str, Any] | None
    finished: datetime | None


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts by dotted name."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {}


Rows = dict[str, dict[str, float]]  # row name -> its metrics by dotted name


def metric_blocks(report: dict[str, Any]) -> tuple[Rows, dict[str, Rows], dict[str, float]]:
    """The metrics of `metrics.json` as tables: methods (a block of numbers, nested ones flattened: the model
    and each baseline), groups (a block of blocks, e.g. `per_category`: one row per member) and the top-level
    numbers. `checkpoint_metrics` (the training record the checkpoint carries) is not an evaluation result.
    """
    methods: Rows = {}
    groups: dict[str, Rows] = {}
    for k, v in report.items():
        if not isinstance(v, dict) or k == "checkpoint_metrics":
            continue
        if v and all(isinstance(member, dict) for member in v.values()):
            rows = {str(name): flatten(member) for name, member in v.items()}
            groups[k] = {name: flat for name, flat in rows.items() if flat}
        elif flatten(v):
            methods[k] = flatten(v)
    top = {k: float(v) for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return methods, {k: g for k, g in groups.items() if g}, top


def rows_table(rows: Rows, first: str, cls: str, id_prefix: str) -> str:
    keys = list(dict.fromkeys(k for flat in rows.values() for k in flat))
    head = f"<th>{escape(first)}</th>" + "".join(f'<th class="sort" data-type="num">{escape(k)}</th>' for k in keys)
    body = []
    for name, flat in rows.items():
        cells = [f'<td data-v="{escape(name)}"><b>{escape(name)}</b></td>']
        cells += [td("-" if k not in flat else number(flat[k]), flat.get(k, ""), True) for k in keys]
        body.append(f'<tr id="{id_prefix}{escape(name)}">{"".join(cells)}</tr>')
    return (
        f'<div class="wide"><table class="sortable {cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def load_eval(run_uri: str) -> EvalFacts:
    uri = storage.join(run_uri, METRICS)
    report = read_json(uri)
    items: list[dict[str, str]] = []
    items_file = ""
    for name in ITEM_FILES:
        if storage.exists(storage.join(run_uri, name)):
            text = storage.get_bytes(storage.join(run_uri, name)).decode()
            items, items_file = list(csv.DictReader(io.StringIO(text))), name
            break
    panels = sorted(
        u[len(run_uri) + 1 :] for u in storage.list_prefix(storage.join(run_uri, "panels") + "/") if u.endswith(".png")
    )
    config_uri = storage.join(run_uri, "config.yaml")
    config = yaml.safe_load(storage.get_bytes(config_uri)) if storage.exists(config_uri) else None
    return EvalFacts(
        run_uri, report, items, items_file, panels, config if isinstance(config, dict) else None, modified(uri)
    )


def number(v: float) -> str:
    """Counts as integers, scores with 4 decimals."""
    return f"{v:,.0f}" if v.is_integer() and abs(v) > 1 else f"{v:.4f}"


def metrics_section(facts: EvalFacts) -> str:
    methods, groups, top = metric_blocks(facts.report)
    parts = []
    if methods:
        parts.append(rows_table(methods, "method", "metrics", "method-"))
    if top:
        rows = [
            f'<tr id="metric-{escape(k)}"><td>{escape(k)}</td>{td(number(v), v, True)}</tr>' for k, v in top.items()
        ]
        parts.append(
            '<table class="metrics"><thead><tr><th>metric</th><th>value</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    for name, members in groups.items():
        parts.append(f"<h3>{escape(name)}</h3>" + rows_table(members, name, f"group-{name}", f"{name}-"))
    parts.append(
        f'<p class="note">All values from {link(METRICS, METRICS)}; IoU, F1, accuracy and precision are '
        "fractions (0-1).</p>"
    )
    return "".join(parts)


def plots(facts: EvalFacts) -> list[str]:
    blocks, _, top = metric_blocks(facts.report)
    figs = []
    for key in ("pooled.iou_water", "pooled.iou_mean", "mean_chip_iou_water"):
        values = {name: flat[key] for name, flat in blocks.items() if key in flat}
        if values:
            figs.append(svg.bar_chart(values, f"{key} by method", f"{key} (fraction, 0-1)"))
    scores = {k: v for k, v in top.items() if 0.0 <= v <= 1.0}
    if scores:
        figs.append(svg.bar_chart(scores, "metrics", "value (fraction, 0-1)"))
    return [f for f in figs if f]


def items_section(facts: EvalFacts) -> str:
    if not facts.items:
        return '<p class="note">No per-item table in this run.</p>'
    keys = list(facts.items[0])
    head = "".join(
        f'<th class="sort" data-type="{"num" if is_num(facts.items[0][k]) else "str"}">{escape(k)}</th>' for k in keys
    )
    rows = []
    for r in facts.items[:ITEM_ROWS]:
        rows.append("<tr>" + "".join(td(escape(cell(r[k])), r[k], is_num(r[k])) for k in keys) + "</tr>")
    more = f" (first {ITEM_ROWS} of {len(facts.items)})" if len(facts.items) > ITEM_ROWS else ""
    return (
        f'<div class="wide"><table class="sortable items"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f'<p class="note">From {link(facts.items_file, facts.items_file)}{more}.</p>'
    )


def cell(text: str) -> str:
    """A CSV value as shown: long decimals rounded to 4 significant digits (the CSV keeps them all)."""
    if is_num(text) and "." in text and len(text) > 8:
        return f"{float(text):.4g}"
    return text


def is_num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def panels_section(facts: EvalFacts) -> str:
    if not facts.panels:
        return '<p class="note">No panels (eval.panels=0).</p>'
    imgs = "".join(
        f'<figure><a href="{escape(p)}"><img class="panel" src="{escape(p)}" loading="lazy" width="{PANEL_PX}" '
        f'alt="panel {escape(p)}"></a><figcaption class="note">{escape(p.rsplit("/", 1)[-1])}</figcaption></figure>'
        for p in facts.panels
    )
    return f'<div class="figs">{imgs}</div>'


def header(facts: EvalFacts) -> str:
    r = facts.report
    chips = r.get("chips") or []
    rows = [
        ("model", escape(str(r.get("model") if isinstance(r.get("model"), str) else ""))),
        ("checkpoint", escape(str(r.get("checkpoint", "")))),
        ("data", escape(str(r.get("data", "") or (facts.config or {}).get("data", {}).get("root", "")))),
        ("split", escape(str(r.get("split", "")))),
        ("items", f"{len(facts.items)} rows in {escape(facts.items_file)}" if facts.items_file else ""),
        ("chips", escape(", ".join(str(c) for c in chips[:20])) + (" ..." if len(chips) > 20 else "")),
        ("finished", facts.finished.strftime("%Y-%m-%d %H:%M:%S UTC") if facts.finished else "unknown"),
        ("outputs", escape(facts.run_uri)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows if v)
    extra = ""
    if isinstance(r.get("checkpoint_metrics"), dict):
        text = json.dumps(r["checkpoint_metrics"], indent=1)
        extra += f"<details><summary>the checkpoint's training record</summary><pre>{escape(text)}</pre></details>"
    if facts.config:
        text = yaml.safe_dump(facts.config, sort_keys=False)
        extra += (
            f"<details><summary>config ({link('config.yaml', 'config.yaml')})</summary>"
            f"<pre>{escape(text)}</pre></details>"
        )
    return f"<dl class=run>{dl}</dl>{extra}"


def render_eval(facts: EvalFacts) -> str:
    name = facts.run_uri.rstrip("/").rsplit("/", 1)[-1]
    body = f"""{header(facts)}
<h2>Metrics</h2>
{metrics_section(facts)}
<div class="figs">{"".join(plots(facts))}</div>
<h2>Per item</h2>
{items_section(facts)}
<h2>Panels</h2>
{panels_section(facts)}"""
    panels_css = "img.panel{display:block;background:#eee;height:auto;max-width:100%} figure{margin:0}"
    return document(f"rrsis eval {name}", body, panels_css)
